"""Issue 30: the Open Inference Protocol V2 over REST. In process for the protocol's details, and with the
official client (``tritonclient.http``) against a real ``python -m app``: its numbers equal the native routes'."""

from __future__ import annotations

import json
import struct

import httpx
import numpy as np
import orjson
import pytest

from tests.app.hardening_support import serve_process

TEXTS = ["the movie was great", "a terrible , awful plot !", "fine"]
PAIRS = ["i loved it", "the actors were fine", "the cat"]


def _bytes_tensor(texts: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)


def _infer(client, model, body, headers=None):
    r = client.post(f"/v2/models/{model}/infer", content=json.dumps(body), headers=headers or {})
    return r


def _json_input(texts, name="text"):
    return {"name": name, "datatype": "BYTES", "shape": [len(texts)], "data": texts}


def test_metadata_and_health(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data"]
    meta = client.get("/v2/models/teacher").json()
    assert meta["name"] == "teacher" and meta["platform"] == "pytorch_libtorch"
    assert [i["name"] for i in meta["inputs"]] == ["text", "text_pair"]
    assert {o["name"]: o["shape"] for o in meta["outputs"]} == {"logits": [-1, 2], "probabilities": [-1, 2],
                                                                "embedding": [-1, 32]}
    assert [o["name"] for o in client.get("/v2/models/embedder").json()["outputs"]] == ["embedding"]
    assert client.get("/v2/models/teacher/ready").status_code == 200
    missing = client.get("/v2/models/nope/ready")
    assert missing.status_code == 404 and "unknown model" in missing.json()["error"]


def test_json_infer_equals_the_native_routes(client):
    native = client.post("/classify", json={"inputs": TEXTS, "model": "teacher", "raw_scores": True}).json()
    r = _infer(client, "teacher", {"id": "r1", "inputs": [_json_input(TEXTS)],
                                   "outputs": [{"name": "logits"}, {"name": "probabilities"}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == "teacher" and body["id"] == "r1"
    out = {o["name"]: o for o in body["outputs"]}
    assert out["logits"]["shape"] == [3, 2] and out["logits"]["datatype"] == "FP32"
    logits = np.array(out["logits"]["data"]).reshape(3, 2)
    for row, preds in zip(logits, native["predictions"], strict=True):
        got = {p["label"]: p["score"] for p in preds}
        assert row.tolist() == [got["negative"], got["positive"]]
    probs = client.post("/classify", json={"inputs": TEXTS, "model": "teacher"}).json()["predictions"]
    only = _infer(client, "teacher", {"inputs": [_json_input(TEXTS)], "outputs": [{"name": "probabilities"}]})
    for row, preds, both in zip(np.array(only.json()["outputs"][0]["data"]).reshape(3, 2), probs,
                                np.array(out["probabilities"]["data"]).reshape(3, 2), strict=True):
        got = {p["label"]: p["score"] for p in preds}
        assert row.tolist() == [got["negative"], got["positive"]]  # the same forward and softmax: equal
        assert np.allclose(both, row, atol=1e-6)  # softmax of the logits, beside them
    emb = client.post("/embed", json={"inputs": TEXTS, "model": "embedder"}).json()["embeddings"]
    r = _infer(client, "embedder", {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3, 1],
                                                "data": [[t] for t in TEXTS]}]})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["shape"] == [3, 32]
    assert np.array(r.json()["outputs"][0]["data"]).reshape(3, 32).tolist() == emb


def test_binary_tensors_both_ways(client):
    size = len(_bytes_tensor(TEXTS))
    header = orjson.dumps({"inputs": [
        {"name": "text", "datatype": "BYTES", "shape": [3], "parameters": {"binary_data_size": size}},
        {"name": "text_pair", "datatype": "BYTES", "shape": [3], "data": PAIRS}],
        "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]})
    r = client.post("/v2/models/teacher/infer", content=header + _bytes_tensor(TEXTS),
                    headers={"Inference-Header-Content-Length": str(len(header)),
                             "content-type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    head = orjson.loads(r.content[:n])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 3 * 2 * 4
    logits = np.frombuffer(r.content[n:], dtype="<f4").reshape(3, 2)
    native = client.post("/classify", json={"inputs": [list(p) for p in zip(TEXTS, PAIRS, strict=True)],
                                            "model": "teacher", "raw_scores": True}).json()["predictions"]
    for row, preds in zip(logits, native, strict=True):
        got = {p["label"]: p["score"] for p in preds}
        assert row.tolist() == [np.float32(got["negative"]), np.float32(got["positive"])]


def test_a_large_binary_body_is_prechecked_as_json_only_up_to_its_header(client):
    """The body pre-check counts JSON values; binary tensors after the header are not JSON (commas in texts)."""
    texts = ["a , b , " * 4000] * 3  # 96 KB of commas outside any JSON string
    header = orjson.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3],
                                       "parameters": {"binary_data_size": len(_bytes_tensor(texts))}}]})
    r = client.post("/v2/models/teacher/infer", content=header + _bytes_tensor(texts),
                    headers={"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 200, r.text
    metrics = client.get("/metrics").text
    assert 'endpoint="/v2/models/{name}/infer"' in metrics


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]}, 400, "datatype BYTES"),
    ({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a"]}]}, 422, "its shape [2] says 2"),
    ({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [3]}]}, 422, "must be a string"),
    ({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [" "]}]}, 422, "empty"),
    ({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1000], "data": ["a"] * 1000}]}, 413, "limit"),
    ({"inputs": [_json_input(["a"])], "outputs": [{"name": "nope"}]}, 400, "has no output 'nope'"),
    ({"inputs": []}, 422, "inputs"),
    ({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [0], "data": []}]}, 422, "holds no text"),
    ({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2**70], "data": ["a"]}]}, 422, "inputs.0.shape"),
    ({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [10**6, 10**6], "data": ["a"]}]}, 413, "limit"),
    ({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": "a"}]}, 422, "inputs.0.data"),
    ({"inputs": [_json_input(["a"]), _json_input(["b"], "text_pair")], "outputs": [{"name": "embedding"}]}, 400,
     "text_pair input is for classification"),
    ({"inputs": [_json_input(["a"])], "outputs": [{"name": "embedding"}], "parameters": {"pooling": "max"}}, 422,
     "pooling must be"),
    ({"inputs": [_json_input(["a"]), _json_input(["b", "c"], "text_pair")]}, 422, "one text_pair per text"),
    ({"inputs": [_json_input(["a"])], "parameters": {"truncate": "no"}}, 422, "truncate must be a boolean"),
])
def test_errors_in_the_protocols_shape(client, body, status, message):
    r = _infer(client, "teacher", body)
    assert r.status_code == status and message in r.json()["error"], r.text


def test_bad_binary_bodies_are_422(client):
    header = orjson.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                                       "parameters": {"binary_data_size": 10}}]})
    for extra, length in ((struct.pack("<I", 100) + b"abcdef", len(header)), (b"", len(header) + 5),
                          (struct.pack("<I", 2) + b"ab" + b"xxxx", len(header))):
        r = client.post("/v2/models/teacher/infer", content=header + extra,
                        headers={"Inference-Header-Content-Length": str(length)})
        assert r.status_code == 422 and r.json()["error"], r.text
    assert client.post("/v2/models/" + "x" * 500 + "/infer", content=b"{}").status_code == 404
    # A length of 5,000 digits (int() refuses over 4,300): a 422, not a 500, in the middleware and the route.
    r = client.post("/v2/models/teacher/infer", content=header + b"x" * 70_000,
                    headers={"Inference-Header-Content-Length": "9" * 5000})
    assert r.status_code == 422 and "Inference-Header-Content-Length" in r.json()["error"], r.text


# -- the official client against python -m app ---------------------------------------------------------
KEY = "v2-key"


@pytest.fixture(scope="module")
def server(ckpts, tmp_path_factory):
    models = [{"name": "student", "path": str(ckpts["student"]), "role": "student"},
              {"name": "teacher", "path": str(ckpts["teacher"]), "role": "teacher"},
              {"name": "embedder", "path": str(ckpts["embedder"]), "role": "other", "max_length": 64}]
    with serve_process(tmp_path_factory.mktemp("v2"), models, {"DISTIL_API_KEY": KEY}) as p:
        yield p


def _native(server, path, body):
    r = httpx.post(f"{server.base}{path}", json=body, headers={"authorization": f"Bearer {KEY}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_works_unchanged(server, binary):
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    auth = {"Authorization": f"Bearer {KEY}"}
    client = triton.InferenceServerClient(url=server.base.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("teacher", headers=auth)
        meta = client.get_model_metadata("teacher", headers=auth)
        assert [i["name"] for i in meta["inputs"]] == ["text", "text_pair"]

        def texts_input(name, texts):
            t = triton.InferInput(name, [len(texts)], "BYTES")
            t.set_data_from_numpy(np.array([x.encode() for x in texts], dtype=np.object_), binary_data=binary)
            return t

        # classify: the default outputs (binary, as the client asks when none are named), and named ones
        result = client.infer("teacher", [texts_input("text", TEXTS)], headers=auth)
        native = _native(server, "/classify", {"inputs": TEXTS, "model": "teacher"})["predictions"]
        expect = np.array([[{p["label"]: p["score"] for p in preds}[k] for k in ("negative", "positive")]
                           for preds in native], dtype=np.float32)
        assert np.allclose(result.as_numpy("probabilities"), expect, atol=1e-6)
        logits = client.infer("teacher", [texts_input("text", TEXTS), texts_input("text_pair", PAIRS)],
                              outputs=[triton.InferRequestedOutput("logits", binary_data=binary)], headers=auth)
        native = _native(server, "/classify", {"inputs": [list(p) for p in zip(TEXTS, PAIRS, strict=True)],
                                               "model": "teacher", "raw_scores": True})["predictions"]
        expect = np.array([[{p["label"]: p["score"] for p in preds}[k] for k in ("negative", "positive")]
                           for preds in native], dtype=np.float32)
        assert np.array_equal(logits.as_numpy("logits"), expect)
        # embed
        emb = client.infer("embedder", [texts_input("text", TEXTS)],
                           outputs=[triton.InferRequestedOutput("embedding", binary_data=binary)], headers=auth)
        native = np.array(_native(server, "/embed", {"inputs": TEXTS, "model": "embedder"})["embeddings"],
                          dtype=np.float32)
        assert np.array_equal(emb.as_numpy("embedding"), native)
        # without the key: refused, the protocol's error shape read by the client
        with pytest.raises(InferenceServerException, match="missing API key"):
            client.infer("teacher", [texts_input("text", TEXTS)])
        with pytest.raises(InferenceServerException, match="unknown model"):
            client.infer("nope", [texts_input("text", TEXTS)], headers=auth)
    finally:
        client.close()
