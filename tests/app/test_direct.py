"""The middleware's direct call of inference endpoints (app/api/inference.DirectRoute) answers
exactly as FastAPI's own handling of the same route does. A body sent as ``application/json`` takes
the direct call; the same body as ``application/json; charset=utf-8`` goes through FastAPI."""

from __future__ import annotations

import json

import pytest

DIRECT = {"content-type": "application/json"}
FASTAPI = {"content-type": "application/json; charset=utf-8"}
V2 = "/v2/models/student/infer"

GOOD = [
    ("/classify", {"inputs": ["a fine film", "dull"], "model": "student"}),
    ("/classify", {"inputs": "a fine film", "raw_scores": True, "model": "teacher"}),
    ("/embed", {"inputs": ["one", "two three"], "normalize": False, "pooling": "cls"}),
    ("/v1/embeddings", {"input": ["one", "two"], "model": "student", "encoding_format": "base64"}),
    ("/compare", {"inputs": ["good", "bad"], "task": "classify"}),
    (V2, {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a fine film", "dull"]}]}),
    (V2, {"id": "7", "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["one"]}],
          "outputs": [{"name": "embedding"}], "parameters": {"pooling": "cls", "normalize": False}}),
]
BAD = [
    ("/classify", {"inputs": []}),
    ("/classify", {"inputs": [1, 2]}),
    ("/classify", {"inputs": "x", "nope": 1}),
    ("/classify", {"inputs": "x", "model": "missing"}),
    ("/embed", {"inputs": ["x"] * 65}),
    ("/embed", {"inputs": "x", "pooling": "max"}),
    ("/embed", {"inputs": "x " * 500, "truncate": False}),
    ("/v1/embeddings", {"input": [[1, 2]], "model": "student"}),
    ("/v1/embeddings", {"input": "x", "model": "student", "dimensions": 7}),
    ("/v1/embeddings", {"input": "x"}),
    ("/compare", {"inputs": "x", "task": "nothing"}),
    (V2, {"inputs": []}),
    (V2, {"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]}),
    (V2, {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x"]}], "outputs": [{"name": "no"}]}),
    ("/v2/models/missing/infer", {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}),
]
RAW_BAD = [("/classify", b"{not json"), (V2, b"{not json"), ("/embed", b'{"inputs": "ab\\ud800cd"}'),
           ("/embed", b"[" * 3000 + b"]" * 3000)]


def _both(client, path: str, content: bytes):
    direct = client.post(path, content=content, headers=DIRECT)
    slow = client.post(path, content=content, headers=FASTAPI)
    return direct, slow


@pytest.mark.parametrize("path,body", GOOD)
def test_answers_match_fastapis(client, path, body):
    direct, slow = _both(client, path, json.dumps(body).encode())
    assert direct.status_code == slow.status_code == 200, (direct.text[:300], slow.text[:300])
    a, b = direct.json(), slow.json()
    if path == "/compare":  # timings differ from call to call
        a = {k: a[k] for k in ("task", "label_agreement")} | {r: a[r]["predictions"] for r in ("teacher", "student")}
        b = {k: b[k] for k in ("task", "label_agreement")} | {r: b[r]["predictions"] for r in ("teacher", "student")}
    assert json.dumps(a) == json.dumps(b) or _close(a, b)
    assert direct.headers["x-request-id"] and "x-inference-time" in direct.headers


def _close(a, b, tol=1e-5) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return abs(a - b) <= tol
    return a == b


@pytest.mark.parametrize("path,body", BAD)
def test_errors_match_fastapis(client, path, body):
    direct, slow = _both(client, path, json.dumps(body).encode())
    assert 400 <= direct.status_code < 500, direct.text
    assert direct.status_code == slow.status_code, (direct.text, slow.text)
    assert direct.json()["error_type"] == slow.json()["error_type"]
    assert direct.json()["error"] == slow.json()["error"]


@pytest.mark.parametrize("body", ["just a string", None, 3, [{"inputs": "x"}]])
def test_a_body_that_is_not_an_object_is_the_same_422(client, body):
    # pydantic words it for JSON input ("an object") and Python input ("a valid dictionary ...").
    direct, slow = _both(client, "/classify", json.dumps(body).encode())
    assert direct.status_code == slow.status_code == 422, (direct.text, slow.text)
    assert direct.json()["error"].startswith("Input should be") and slow.json()["error"].startswith("Input should be")


@pytest.mark.parametrize("path,content", RAW_BAD)
def test_malformed_bodies_are_the_same_4xx(client, path, content):
    direct, slow = _both(client, path, content)
    assert direct.status_code == slow.status_code == 422, (direct.text, slow.text)
    assert direct.json()["error_type"] == slow.json()["error_type"] == "validation"


def test_every_inference_route_is_called_directly(client):
    """Through the table the middleware resolves each request with (app/api/routing.RouteTable)."""
    from fastapi.routing import iter_route_contexts

    from app.api.routing import RouteTable

    table = RouteTable(client.app.routes)
    posts = {c.path for c in iter_route_contexts(client.app.routes)
             if "POST" in (getattr(c.original_route, "methods", None) or ())}
    # V2 infer's endpoint takes its path parameter and reads the raw body: direct too, by any model name.
    assert table.resolve("POST", "/v2/models/m/infer").direct is not None
    assert {p for p in posts if table.resolve("POST", p.replace("{name}", "m")).direct is not None} == {
        "/classify", "/embed", "/v1/embeddings", "/compare", "/rerank", "/tokenize", "/v2/models/{name}/infer"}
