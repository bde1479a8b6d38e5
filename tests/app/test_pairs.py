"""Issue 30: sentence pairs end to end, checked against transformers on the same
checkpoints (AutoModelForSequenceClassification and the fast tokenizer's pair encoding and truncation)."""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from app.backends.base import longest_first
from app.main import create_app
from app.settings import ModelSpec
from tests.app.conftest import make_settings, wait_ready

PAIRS = [["the movie was great", "i loved it"], ["a terrible , awful plot !", "the actors were fine"],
         ["fine", "the cat and the dog and the market fell today"]]


def _hf(ckpt, pairs, max_length=None):
    """transformers' logits for the pairs (its tokenizer, its model), and its encoding."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(ckpt)
    enc = tok([p[0] for p in pairs], [p[1] for p in pairs], padding=True, return_tensors="pt",
              truncation="longest_first" if max_length else False, max_length=max_length)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(ckpt).eval()
    names = ("input_ids", "attention_mask", "token_type_ids") if hf.config.model_type == "bert" else (
        "input_ids", "attention_mask")
    with torch.no_grad():
        return hf(**{k: enc[k] for k in names}).logits, enc


@pytest.mark.parametrize("name", ["teacher", "student"])
def test_pair_logits_equal_transformers(client, ckpts, name):
    r = client.post("/classify", json={"inputs": PAIRS, "model": name, "raw_scores": True})
    assert r.status_code == 200, r.text
    ref, _ = _hf(ckpts[name], PAIRS)
    for preds, logits in zip(r.json()["predictions"], ref, strict=True):
        got = {x["label"]: x["score"] for x in preds}
        assert abs(got["negative"] - logits[0].item()) < 1e-5 and abs(got["positive"] - logits[1].item()) < 1e-5


def test_bert_pairs_use_token_types(client):
    """The second segment's token type matters to BERT: a pair is not the two texts joined."""
    pair = client.post("/classify", json={"inputs": [PAIRS[0]], "model": "teacher", "raw_scores": True}).json()
    joined = client.post("/classify", json={"inputs": [" [SEP] ".join(PAIRS[0])], "model": "teacher",
                                            "raw_scores": True}).json()
    assert pair["predictions"] != joined["predictions"]


def test_pairs_and_texts_mix_in_one_request(client):
    mixed = client.post("/classify", json={"inputs": ["fine", PAIRS[0]], "model": "teacher"}).json()["predictions"]
    alone = [client.post("/classify", json={"inputs": [x], "model": "teacher"}).json()["predictions"][0]
             for x in ("fine", PAIRS[0])]
    for m, a in zip(mixed, alone, strict=True):
        assert {x["label"]: x["score"] for x in m} == pytest.approx({x["label"]: x["score"] for x in a}, abs=1e-6)


@pytest.mark.parametrize(("n_a", "n_b", "budget"), [(3, 4, 10), (20, 3, 10), (3, 20, 10), (20, 20, 10),
                                                    (20, 20, 9), (30, 7, 9), (7, 30, 9), (5, 5, 9), (12, 1, 9)])
def test_longest_first_keeps_what_transformers_keeps(ckpts, n_a, n_b, budget):
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(ckpts["teacher"])
    a, b = " ".join(["cat"] * n_a), " ".join(["dog"] * n_b)
    ids = tok(a, b, truncation="longest_first", max_length=budget + 3)["input_ids"]
    cat, dog = tok.convert_tokens_to_ids(["cat", "dog"])
    assert longest_first(n_a, n_b, budget) == (ids.count(cat), ids.count(dog))


@pytest.fixture(scope="module")
def short(ckpts):
    """The teacher cut at 16 tokens, to test truncation."""
    models = [ModelSpec(name="teacher", path=ckpts["teacher"], role="teacher", max_length=16),
              ModelSpec(name="student", path=ckpts["student"], role="student", max_length=16)]
    with TestClient(create_app(make_settings(ckpts, models=models))) as c:
        wait_ready(c)
        yield c


LONG = [["the movie was great and the plot was fine but the actors", "i loved it really"],
        ["fine", "the cat and the dog and the market fell today and stocks rose and fell again"]]


@pytest.mark.parametrize("name", ["teacher", "student"])
def test_truncated_pairs_equal_transformers_longest_first(short, ckpts, name):
    r = short.post("/classify", json={"inputs": LONG, "model": name, "raw_scores": True})
    assert r.status_code == 200, r.text
    ref, _ = _hf(ckpts[name], LONG, max_length=16)
    for preds, logits in zip(r.json()["predictions"], ref, strict=True):
        got = {x["label"]: x["score"] for x in preds}
        assert abs(got["negative"] - logits[0].item()) < 1e-5 and abs(got["positive"] - logits[1].item()) < 1e-5


def test_a_long_pair_without_truncation_is_a_clear_422(short):
    r = short.post("/classify", json={"inputs": ["fine", LONG[0]], "truncate": False})
    assert r.status_code == 422, r.text
    assert "inputs[1] (a text pair) has" in r.json()["error"] and "truncate=true" in r.json()["error"]


@pytest.mark.parametrize(("inputs", "message"), [
    ([["a", "b", "c"]], "inputs[0] must be a string or a pair [text, text_pair] of two strings"),
    ([["a"]], "inputs[0] must be a string or a pair"),
    ([["a", 3]], "inputs[0] must be a string or a pair"),
    ([["a", " "]], "inputs[0][1] is empty"),
])
def test_malformed_pairs_are_422(client, inputs, message):
    r = client.post("/classify", json={"inputs": inputs})
    assert r.status_code == 422 and message in r.json()["error"], r.text


def test_embed_takes_no_pairs(client):
    r = client.post("/embed", json={"inputs": [PAIRS[0]]})
    assert r.status_code == 422 and "must be a string" in r.json()["error"], r.text


def test_onnx_bert_refuses_pairs_and_onnx_distilbert_takes_them(ckpts, tmp_path):
    import shutil

    for name in ("teacher", "student"):
        shutil.copytree(ckpts[name], tmp_path / name, ignore=shutil.ignore_patterns("onnx"))
    models = [ModelSpec(name="teacher", path=tmp_path / "teacher", role="teacher", backend="onnx"),
              ModelSpec(name="student", path=tmp_path / "student", role="student", backend="onnx")]
    with TestClient(create_app(make_settings(ckpts, models=models, warmup=False))) as c:
        wait_ready(c, timeout=120)
        r = c.post("/classify", json={"inputs": [PAIRS[0]], "model": "teacher"})
        assert r.status_code == 400 and "token_type_ids" in r.json()["error"], r.text
        assert c.post("/classify", json={"inputs": ["fine"], "model": "teacher"}).status_code == 200
        r = c.post("/classify", json={"inputs": PAIRS, "model": "student", "raw_scores": True})
        assert r.status_code == 200, r.text
        ref, _ = _hf(ckpts["student"], PAIRS)
        for preds, logits in zip(r.json()["predictions"], ref, strict=True):
            got = {x["label"]: x["score"] for x in preds}
            assert abs(got["positive"] - logits[1].item()) < 1e-4
