"""Issue 30: POST /rerank, /compare task=rerank and POST /tokenize."""

from __future__ import annotations

import math

import pytest
import torch
from fastapi.testclient import TestClient

from app.core import ranking
from app.main import create_app
from app.settings import ModelSpec
from tests.app.conftest import make_settings, wait_ready
from tests.fixtures import write_tiny

QUERY = "the movie was great"
TEXTS = ["i loved it", "the market fell today", "a terrible , awful plot !", "the actors were fine",
         "the cat and the dog", "really good film", "stocks rose", "it was bad"]


def _hf_scores(ckpt, query, texts):
    """transformers' logits for each (query, text) pair."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(ckpt)
    enc = tok([query] * len(texts), texts, padding=True, return_tensors="pt")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(ckpt).eval()
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if hf.config.model_type == "bert" else [])
    with torch.no_grad():
        return hf(**{k: enc[k] for k in names}).logits


@pytest.mark.parametrize("name", ["teacher", "student"])
def test_rerank_orders_as_the_cross_encoders_scores_sort(client, ckpts, name):
    r = client.post("/rerank", json={"query": QUERY, "texts": TEXTS, "model": name})
    assert r.status_code == 200, r.text
    got = r.json()
    probs = torch.softmax(_hf_scores(ckpts[name], QUERY, TEXTS), -1)[:, 1].tolist()
    assert [x["index"] for x in got] == sorted(range(len(TEXTS)), key=lambda i: -probs[i])
    for x in got:
        assert abs(x["score"] - probs[x["index"]]) < 1e-5 and "text" not in x
    # The score is /classify's probability of the second label, for the same pair.
    pred = client.post("/classify", json={"inputs": [[QUERY, TEXTS[0]]], "model": name}).json()["predictions"][0]
    assert next(x["score"] for x in got if x["index"] == 0) == {p["label"]: p["score"] for p in pred}["positive"]


def test_rerank_top_n_texts_and_raw_scores(client, ckpts):
    full = client.post("/rerank", json={"query": QUERY, "texts": TEXTS, "model": "teacher"}).json()
    top = client.post("/rerank", json={"query": QUERY, "texts": TEXTS, "model": "teacher", "top_n": 3,
                                       "return_texts": True}).json()
    assert [x["index"] for x in top] == [x["index"] for x in full[:3]]
    assert [x["text"] for x in top] == [TEXTS[x["index"]] for x in top]
    assert client.post("/rerank", json={"query": QUERY, "texts": TEXTS[:2], "model": "teacher",
                                        "return_text": True}).json()[0]["text"] in TEXTS  # TEI's spelling
    raw = client.post("/rerank", json={"query": QUERY, "texts": TEXTS, "model": "teacher", "raw_scores": True})
    logits = _hf_scores(ckpts["teacher"], QUERY, TEXTS)[:, 1].tolist()
    for x in raw.json():
        assert abs(x["score"] - logits[x["index"]]) < 1e-5


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"query": " ", "texts": ["a"]}, 422, "query is empty"),
    ({"query": "q", "texts": []}, 422, "texts must not be empty"),
    ({"query": "q", "texts": ["a", 3]}, 422, "texts[1] must be a string"),
    ({"query": "q", "texts": ["a"], "top_n": 0}, 422, "top_n"),
    ({"query": "q", "texts": ["a"], "model": "embedder"}, 400, "configured for classify"),
    ({"query": "q", "texts": ["a"], "extra": 1}, 422, "unknown field"),
])
def test_rerank_refusals(client, body, status, message):
    r = client.post("/rerank", json=body)
    assert r.status_code == status and message in r.json()["error"], r.text


def test_one_label_cross_encoder_scores_by_sigmoid(ckpts, tmp_path):
    path = write_tiny(tmp_path / "ce", "bert", "classification", seed=5, labels={0: "relevance"})
    models = [ModelSpec(name="ce", path=path, role="teacher")]
    with TestClient(create_app(make_settings(ckpts, models=models, warmup=False))) as c:
        wait_ready(c)
        got = c.post("/rerank", json={"query": QUERY, "texts": TEXTS}).json()
        raw = c.post("/rerank", json={"query": QUERY, "texts": TEXTS, "raw_scores": True}).json()
    logits = _hf_scores(path, QUERY, TEXTS)[:, 0].tolist()
    assert [x["index"] for x in got] == sorted(range(len(TEXTS)), key=lambda i: -logits[i])
    assert [x["index"] for x in raw] == [x["index"] for x in got]
    for x in got:
        assert abs(x["score"] - 1 / (1 + math.exp(-logits[x["index"]]))) < 1e-5
    for x in raw:
        assert abs(x["score"] - logits[x["index"]]) < 1e-5


def test_compare_rerank_reports_both_rankings_their_overlap_and_spearman(client):
    r = client.post("/compare", json={"task": "rerank", "query": QUERY, "inputs": TEXTS, "top_n": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    teacher = client.post("/rerank", json={"query": QUERY, "texts": TEXTS, "model": "teacher"}).json()
    student = client.post("/rerank", json={"query": QUERY, "texts": TEXTS, "model": "student"}).json()
    assert [x["index"] for x in body["teacher"]["ranking"]] == [x["index"] for x in teacher]
    assert [x["index"] for x in body["student"]["ranking"]] == [x["index"] for x in student]
    top_t, top_s = {x["index"] for x in teacher[:3]}, {x["index"] for x in student[:3]}
    assert body["top_n"] == 3 and body["top_n_overlap"] == len(top_t & top_s) / 3
    t_scores = {x["index"]: x["score"] for x in teacher}
    s_scores = {x["index"]: x["score"] for x in student}
    expected = ranking.spearman([t_scores[i] for i in range(len(TEXTS))], [s_scores[i] for i in range(len(TEXTS))])
    assert body["spearman"] == pytest.approx(expected)
    assert client.post("/compare", json={"task": "rerank", "inputs": TEXTS}).status_code == 422  # no query
    assert client.post("/compare", json={"task": "embed", "inputs": [["a", "b"]]}).status_code == 422


def test_compare_classify_takes_pairs(client):
    r = client.post("/compare", json={"task": "classify", "inputs": [[QUERY, TEXTS[0]], "fine"]})
    assert r.status_code == 200, r.text
    assert len(r.json()["teacher"]["predictions"]) == 2


def test_spearman_and_overlap():
    assert ranking.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert ranking.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert ranking.spearman([1, 1, 1], [1, 2, 3]) is None and ranking.spearman([1], [1]) is None
    assert ranking.spearman([1, 2, 2, 4], [1, 3, 2, 4]) == pytest.approx(0.9486833, abs=1e-6)  # scipy's, ties averaged
    assert ranking.overlap([0, 1, 2, 3], [1, 0, 3, 2], 2) == 1.0 and ranking.overlap([0, 1], [1, 0], 1) == 0.0
    assert ranking.ranking([0.5, 0.9, 0.5]) == [1, 0, 2]


# -- /tokenize ---------------------------------------------------------------------------------------------
def test_tokenize_equals_transformers_ids_and_offsets(client, ckpts):
    import transformers

    inputs = ["the movie was great!", ["a terrible plot", "the actors were fine"]]
    r = client.post("/tokenize", json={"inputs": inputs, "model": "teacher"})
    assert r.status_code == 200, r.text
    got = r.json()["inputs"]
    tok = transformers.AutoTokenizer.from_pretrained(ckpts["teacher"])
    one = tok(inputs[0], return_offsets_mapping=True)
    two = tok(*inputs[1], return_offsets_mapping=True)
    assert got[0]["ids"] == one["input_ids"] and got[0]["type_ids"] is None
    assert [tuple(o) for o in got[0]["offsets"]] == [tuple(o) for o in one["offset_mapping"]]
    assert got[0]["tokens"] == tok.convert_ids_to_tokens(one["input_ids"])
    assert got[1]["ids"] == two["input_ids"] and got[1]["type_ids"] == two["token_type_ids"]
    assert [tuple(o) for o in got[1]["offsets"]] == [tuple(o) for o in two["offset_mapping"]]
    assert not got[0]["truncated"] and not got[1]["truncated"]


def test_tokenize_shows_the_truncation_a_forward_would_apply(ckpts):
    import transformers

    models = [ModelSpec(name="teacher", path=ckpts["teacher"], role="teacher", max_length=12)]
    long_pair = ["the movie was great and the plot was fine", "i loved it really and the actors"]
    long_text = "the cat and the dog " * 40
    with TestClient(create_app(make_settings(ckpts, models=models, warmup=False))) as c:
        wait_ready(c)
        r = c.post("/tokenize", json={"inputs": [long_pair, long_text, "fine"]}).json()
        assert r["max_length"] == 12
        tok = transformers.AutoTokenizer.from_pretrained(ckpts["teacher"])
        assert r["inputs"][0]["ids"] == tok(*long_pair, truncation="longest_first", max_length=12)["input_ids"]
        assert r["inputs"][1]["ids"] == tok(long_text, truncation=True, max_length=12)["input_ids"]
        assert [x["truncated"] for x in r["inputs"]] == [True, True, False]
        refused = c.post("/tokenize", json={"inputs": [long_pair], "truncate": False})
        assert refused.status_code == 422 and "(a text pair) has" in refused.json()["error"], refused.text


def test_a_pairs_tokens_count_both_segments_in_the_metrics(client):
    from tests.app.hardening_support import metric_values

    def teacher_tokens() -> float:
        values = metric_values(client.get("/metrics").text, "distil_tokens_total")
        return sum(v for k, v in values.items() if 'model="teacher"' in k)

    pair = ["the movie was great", "i loved it"]
    before = teacher_tokens()
    assert client.post("/classify", json={"inputs": [pair], "model": "teacher"}).status_code == 200
    ids = client.post("/tokenize", json={"inputs": [pair], "model": "teacher"}).json()["inputs"][0]["ids"]
    assert len(ids) == 10 and teacher_tokens() - before == 10  # [CLS] 4 [SEP] 3 [SEP]
