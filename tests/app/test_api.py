"""Every endpoint's happy path, checked against transformers on the same checkpoints."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import torch

from tests.model.hf_reference import hf_class


def _hf_tokens(ckpt, texts):
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(ckpt)
    return tok(texts, padding=True, return_tensors="pt")


def test_classify_matches_transformers(client, ckpts):
    texts = ["the movie was great", "a terrible , awful plot !", "fine"]
    r = client.post("/classify", json={"inputs": texts})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "student"  # the default is the student
    hf = hf_class("DistilBertForSequenceClassification").from_pretrained(ckpts["student"]).eval()
    enc = _hf_tokens(ckpts["student"], texts)
    with torch.no_grad():
        probs = torch.softmax(hf(**{k: enc[k] for k in ("input_ids", "attention_mask")}).logits, -1)
    for preds, p in zip(body["predictions"], probs, strict=True):
        assert [x["score"] for x in preds] == sorted((x["score"] for x in preds), reverse=True)
        got = {x["label"]: x["score"] for x in preds}
        assert abs(got["negative"] - p[0].item()) < 1e-5 and abs(got["positive"] - p[1].item()) < 1e-5


def test_classify_raw_scores_are_logits(client, ckpts):
    r = client.post("/classify", json={"inputs": "great film", "model": "teacher", "raw_scores": True})
    assert r.status_code == 200
    hf = hf_class("BertForSequenceClassification").from_pretrained(ckpts["teacher"]).eval()
    enc = _hf_tokens(ckpts["teacher"], ["great film"])
    with torch.no_grad():
        logits = hf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[0]
    got = {x["label"]: x["score"] for x in r.json()["predictions"][0]}
    assert abs(got["negative"] - logits[0].item()) < 1e-5
    assert abs(got["positive"] - logits[1].item()) < 1e-5


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_embed_matches_transformers(client, ckpts, pooling):
    texts = ["the cat", "stocks fell today and the market was bad"]
    r = client.post("/embed", json={"inputs": texts, "model": "teacher", "pooling": pooling, "normalize": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["dim"] == 32 and len(body["embeddings"]) == 2
    hf = hf_class("BertModel").from_pretrained(ckpts["teacher"]).eval()
    enc = _hf_tokens(ckpts["teacher"], texts)
    with torch.no_grad():
        h = hf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    m = enc["attention_mask"][:, :, None].float()
    ref = (h * m).sum(1) / m.sum(1) if pooling == "mean" else h[:, 0]
    ref = torch.nn.functional.normalize(ref, dim=-1)
    got = torch.tensor(body["embeddings"])
    assert (got - ref).abs().max().item() < 1e-5


def test_embed_default_pooling_from_checkpoint(client):
    # The embedder's 1_Pooling config says CLS; the default must follow it.
    a = client.post("/embed", json={"inputs": "the cat", "model": "embedder"}).json()["embeddings"]
    b = client.post("/embed", json={"inputs": "the cat", "model": "embedder", "pooling": "cls"}).json()["embeddings"]
    c = client.post("/embed", json={"inputs": "the cat", "model": "embedder", "pooling": "mean"}).json()["embeddings"]
    assert a == b and a != c


def test_embed_unnormalized(client):
    v = client.post("/embed", json={"inputs": "the cat", "normalize": False}).json()["embeddings"][0]
    n = client.post("/embed", json={"inputs": "the cat"}).json()["embeddings"][0]
    assert abs(np.linalg.norm(n) - 1) < 1e-5 and abs(np.linalg.norm(v) - 1) > 1e-3


def test_timing_headers_and_request_id(client):
    r = client.post("/embed", json={"inputs": "the cat"}, headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    for h in ("x-queue-time", "x-tokenization-time", "x-inference-time", "x-total-time"):
        assert float(r.headers[h]) >= 0
    assert float(r.headers["x-total-time"]) >= float(r.headers["x-inference-time"])
    assert len(client.get("/health").headers["x-request-id"]) == 32  # generated


def test_openai_route_with_official_client(client):
    openai = pytest.importorskip("openai")
    oai = openai.OpenAI(base_url=str(client.base_url) + "/v1", api_key="unused", http_client=client)
    res = oai.embeddings.create(model="teacher", input=["the cat", "a dog"])  # base64 on the wire
    assert res.object == "list" and res.model == "teacher"
    assert [d.index for d in res.data] == [0, 1] and len(res.data[0].embedding) == 32
    assert res.usage.prompt_tokens == res.usage.total_tokens == 8  # [CLS] the cat [SEP] + [CLS] a dog [SEP]
    ref = client.post("/embed", json={"inputs": ["the cat", "a dog"], "model": "teacher"}).json()["embeddings"]
    assert np.allclose(np.array([d.embedding for d in res.data]), np.array(ref), atol=1e-6)


def test_openai_float_and_base64_agree(client):
    f = client.post("/v1/embeddings", json={"model": "teacher", "input": "the cat", "encoding_format": "float"})
    b = client.post("/v1/embeddings", json={"model": "teacher", "input": "the cat", "encoding_format": "base64"})
    assert f.status_code == b.status_code == 200
    fb, bb = f.json(), b.json()
    assert set(fb) == {"object", "data", "model", "usage"}
    assert fb["data"][0]["object"] == "embedding"
    decoded = np.frombuffer(base64.b64decode(bb["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, np.array(fb["data"][0]["embedding"], dtype=np.float32))


def test_openai_token_ids_are_unsupported(client):
    r = client.post("/v1/embeddings", json={"model": "teacher", "input": [1, 2, 3]})
    assert r.status_code == 400 and r.json()["error_type"] == "unsupported"


def test_compare_classify(client):
    r = client.post("/compare", json={"inputs": ["great", "bad movie", "fine"], "task": "classify"})
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["teacher"]["model"] == "teacher" and b["student"]["model"] == "student"
    agree = [s[0]["label"] == t[0]["label"]
             for s, t in zip(b["student"]["predictions"], b["teacher"]["predictions"], strict=True)]
    assert b["label_agreement"] == pytest.approx(sum(agree) / 3)
    assert b["speedup"] == pytest.approx(b["teacher"]["latency_ms"] / b["student"]["latency_ms"], rel=1e-6)


def test_compare_embed_cosines(client):
    r = client.post("/compare", json={"inputs": ["the cat", "stocks fell"], "task": "embed"})
    b = r.json()
    s, t = np.array(b["student"]["embeddings"]), np.array(b["teacher"]["embeddings"])
    cos = (s * t).sum(1) / np.linalg.norm(s, axis=1) / np.linalg.norm(t, axis=1)
    assert np.allclose(cos, b["cosine"], atol=1e-6)
    assert b["mean_cosine"] == pytest.approx(float(cos.mean()), abs=1e-6)


def test_info(client):
    info = client.get("/info").json()
    by_name = {m["name"]: m for m in info["models"]}
    assert by_name["teacher"]["layers"] == 4 and by_name["student"]["layers"] == 2
    assert by_name["student"]["family"] == "distilbert" and by_name["teacher"]["role"] == "teacher"
    assert by_name["embedder"]["max_length"] == 64 and by_name["embedder"]["labels"] == []
    assert by_name["teacher"]["parameters"] > by_name["student"]["parameters"]
    assert info["batching"]["max_batch_size"] == 32 and info["version"]
    client.post("/classify", json={"inputs": "x"})
    info = client.get("/info").json()
    lat = {m["name"]: m["latency"] for m in info["models"]}["student"]
    assert lat["count"] >= 1 and lat["p50_ms"] > 0


def test_metrics_have_model_and_role(client):
    client.post("/classify", json={"inputs": ["great"], "model": "teacher"})
    text = client.get("/metrics").text
    assert 'distil_request_duration_seconds_count{endpoint="/classify",model="teacher",role="teacher"}' in text
    assert 'distil_inference_seconds_bucket{le="0.0001",model="student",role="student"}' in text
    assert "distil_model_info{" in text and "distil_queue_depth{" in text


def test_openapi_docs(client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/classify", "/embed", "/v1/embeddings", "/compare", "/health", "/ready", "/info", "/metrics"):
        assert p in paths
