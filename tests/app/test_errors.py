"""Bad input: the right status, one error body shape, never a 500, nothing lost."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.app.conftest import make_settings, wait_ready

ERROR_TYPES = {"validation", "payload_too_large", "not_found", "unsupported", "overloaded",
               "unauthorized", "timeout", "internal"}


def check_error(r, status: int, error_type: str, match: str = "") -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == error_type
    assert body["error_type"] in ERROR_TYPES
    assert match.lower() in body["error"].lower()


@pytest.mark.parametrize("body,match", [
    ({"inputs": []}, "must not be empty"),
    ({"inputs": ""}, "empty or whitespace"),
    ({"inputs": ["ok", "   \n\t"]}, "inputs[1]"),
    ({"inputs": 5}, "inputs"),
    ({"inputs": [1, 2]}, "inputs"),
    ({"inputs": None}, "inputs"),
    ({}, "inputs"),
    ({"inputs": "x", "truncate": "maybe"}, "truncate"),
    ({"inputs": "x", "bogus": 1}, "bogus"),
])
def test_validation_422(client, body, match):
    check_error(client.post("/classify", json=body), 422, "validation", match)


def test_malformed_json_422(client):
    r = client.post("/embed", content=b'{"inputs": ["a",', headers={"content-type": "application/json"})
    check_error(r, 422, "validation", "json")


def test_embed_bad_pooling_422(client):
    check_error(client.post("/embed", json={"inputs": "x", "pooling": "max"}), 422, "validation", "pooling")


def test_too_long_without_truncation_422(client):
    long = " ".join(["movie"] * 200)  # 202 tokens > the embedder's max_length 64
    check_error(client.post("/embed", json={"inputs": ["ok", long], "model": "embedder", "truncate": False}),
                422, "validation", "inputs[1] has 202 tokens")
    r = client.post("/embed", json={"inputs": ["ok", long], "model": "embedder"})
    assert r.status_code == 200  # truncated by default


def test_longer_than_positions_is_truncated_not_crashed(client):
    r = client.post("/classify", json={"inputs": " ".join(["great"] * 1000)})
    assert r.status_code == 200


def test_unknown_model_404(client):
    check_error(client.post("/embed", json={"inputs": "x", "model": "gpt-9"}), 404, "not_found", "gpt-9")
    check_error(client.post("/v1/embeddings", json={"input": "x", "model": "gpt-9"}), 404, "not_found")


def test_classify_without_head_400(client):
    # The embedder has no classifier and no other entry serves classify for it (Service.backend_for).
    check_error(client.post("/classify", json={"inputs": "x", "model": "embedder"}), 400, "unsupported",
                "serves embed, and no other model is configured for classify")


def test_too_many_inputs_413(client):
    check_error(client.post("/embed", json={"inputs": ["cat"] * 65}), 413, "payload_too_large", "limit is 64")


def test_body_over_byte_limit_413(client):
    big = "a" * 2_100_000
    check_error(client.post("/embed", json={"inputs": big}), 413, "payload_too_large", "byte")


def test_chunked_body_over_limit_413(client):
    def gen():
        for _ in range(300):
            yield b"x" * 10_000

    r = client.post("/embed", content=gen(), headers={"content-type": "application/json"})
    check_error(r, 413, "payload_too_large")


def test_unknown_route_and_method(client):
    check_error(client.get("/nope"), 404, "not_found")
    check_error(client.get("/classify"), 405, "unsupported")


@pytest.mark.parametrize("text", [
    "😀🔥👍🏽 great", "مرحبا بالعالم", "שלום", "zero\u200bwidth\u200d", "e\u0301\u0302\u0303",
    "\x00\x01\x07\x1b[31m", "\ud7ff\ufeff\ufffd", "한국어 텍스트", "a" * 5000, "\u202eRTL override",
])
def test_any_unicode_is_handled(client, text):
    for path, body in [("/classify", {"inputs": [text]}), ("/embed", {"inputs": [text]}),
                       ("/v1/embeddings", {"input": [text], "model": "teacher"})]:
        r = client.post(path, json=body)
        assert r.status_code == 200, (path, r.text)


def test_control_only_strings_are_answered_as_empty_inputs(client):
    # Control and format characters are not whitespace to the API (so no 422), and the tokenizer
    # drops them: each such input is [CLS] [SEP] alone and gets that sequence's embedding.
    texts = ["\x00", "\x00\x01\x7f", "\u200b"]
    r = client.post("/v1/embeddings", json={"input": texts, "model": "embedder"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["usage"]["prompt_tokens"] == 2 * len(texts)
    vectors = np.array([d["embedding"] for d in body["data"]])
    assert np.isfinite(vectors).all() and np.abs(vectors - vectors[0]).max() <= 1e-6
    assert np.linalg.norm(vectors[0]) == pytest.approx(1.0, abs=1e-5)


def test_deadline_504(ckpts):
    app = create_app(make_settings(ckpts, request_timeout_s=1e-6, warmup=False))
    with TestClient(app) as c:
        wait_ready(c)
        check_error(c.post("/classify", json={"inputs": ["great"] * 8, "model": "teacher"}), 504, "timeout")
        assert c.post("/classify", json={"inputs": "x"}).status_code == 504
        text = c.get("/metrics").text
        assert 'error_type="timeout"' in text


def test_auth(ckpts):
    app = create_app(make_settings(ckpts, api_key="s3cret", warmup=False))
    with TestClient(app) as c:
        wait_ready(c)
        check_error(c.post("/embed", json={"inputs": "x"}), 401, "unauthorized", "missing")
        r = c.post("/embed", json={"inputs": "x"}, headers={"Authorization": "Bearer wrong"})
        check_error(r, 401, "unauthorized", "invalid")
        assert r.headers["www-authenticate"] == "Bearer"
        check_error(c.get("/info"), 401, "unauthorized")
        ok = {"Authorization": "Bearer s3cret"}
        assert c.post("/embed", json={"inputs": "x"}, headers=ok).status_code == 200
        assert c.post("/v1/embeddings", json={"input": "x", "model": "teacher"}, headers=ok).status_code == 200
        assert c.get("/info", headers=ok).status_code == 200
        for path in ("/health", "/ready", "/metrics"):
            assert c.get(path).status_code == 200


def test_auth_can_close_metrics(ckpts):
    app = create_app(make_settings(ckpts, api_key="k", auth_open_metrics=False, warmup=False))
    with TestClient(app) as c:
        check_error(c.get("/metrics"), 401, "unauthorized")
        assert c.get("/metrics", headers={"Authorization": "Bearer k"}).status_code == 200


def test_internal_error_is_500_without_internals(ckpts, caplog):
    app = create_app(make_settings(ckpts, warmup=False))
    with TestClient(app, raise_server_exceptions=False) as c:
        wait_ready(c)
        backend = app.state.service.backends["student"]

        def broken(texts):
            raise RuntimeError("secret internal detail")

        backend.tokenize = broken
        r = c.post("/classify", json={"inputs": "x"}, headers={"x-request-id": "req-42"})
        check_error(r, 500, "internal", "req-42")
        assert "secret" not in r.text
        assert any("req-42" in rec.getMessage() for rec in caplog.records)
        # The service keeps serving other models.
        assert c.post("/classify", json={"inputs": "x", "model": "teacher"}).status_code == 200


def test_failed_load_is_reported(tmp_path):
    from app.settings import ModelSpec, Settings

    s = Settings(models=[ModelSpec(name="m", path=tmp_path / "missing", role="student")], device="cpu")
    with TestClient(create_app(s)) as c:
        for _ in range(100):
            if c.get("/health").status_code == 503:
                break
        check_error(c.get("/health"), 503, "internal", "loading failed")
        assert "not a directory" in c.get("/info").json()["failure"]  # the detail, behind the key if one is set
        check_error(c.get("/ready"), 503, "overloaded")
        check_error(c.post("/embed", json={"inputs": "x"}), 503, "overloaded", "not ready")
