"""Backends per model entry: ONNX Runtime and int8 variants answer every endpoint like the torch
reference; settings refuse what the device cannot run; a corrupt export is never served."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.main import create_app
from app.settings import ModelSpec, Settings
from tests.app.conftest import make_settings, wait_ready
from tests.app.test_batching import _concurrent, _texts

ROOT = Path(__file__).resolve().parents[2]

VARIANTS = [("torch", "fp32"), ("torch", "int8"), ("onnx", "fp32"), ("onnx", "int8"), ("onnx", "int8_mixed")]


def _variant_settings(ckpts, backend: str, precision: str, **kw) -> Settings:
    models = [ModelSpec(name=n, path=ckpts[n], role=r, backend=backend, precision=precision, max_length=ml)
              for n, r, ml in (("student", "student", None), ("teacher", "teacher", None),
                               ("embedder", "other", 64))]
    return make_settings(ckpts, models=models, **kw)


@pytest.fixture(scope="module")
def reference(ckpts):
    """The torch fp32 service's answers: what every variant is compared with."""
    with TestClient(create_app(make_settings(ckpts))) as c:
        wait_ready(c)
        yield _answers(c)


def _answers(c: TestClient) -> dict:
    texts = _texts(6, seed=4)
    out = {}
    for m in ("student", "teacher"):
        r = c.post("/classify", json={"inputs": texts, "model": m, "raw_scores": True})
        assert r.status_code == 200, r.text
        out[f"classify/{m}"] = np.array([[s["score"] for s in sorted(p, key=lambda s: s["label"])]
                                         for p in r.json()["predictions"]])
    for m in ("student", "teacher", "embedder"):
        r = c.post("/embed", json={"inputs": texts, "model": m})
        assert r.status_code == 200, r.text
        out[f"embed/{m}"] = np.array(r.json()["embeddings"])
    r = c.post("/v1/embeddings", json={"input": texts, "model": "embedder"})
    assert r.status_code == 200, r.text
    out["openai/embedder"] = np.array([d["embedding"] for d in r.json()["data"]])
    for task in ("classify", "embed"):
        r = c.post("/compare", json={"inputs": texts[:2], "task": task})
        assert r.status_code == 200, r.text
    return out


@pytest.mark.parametrize(("backend", "precision"), VARIANTS[1:])
def test_variant_answers_every_endpoint(ckpts, reference, backend, precision):
    with TestClient(create_app(_variant_settings(ckpts, backend, precision))) as c:
        wait_ready(c, timeout=120)
        info = {m["name"]: m for m in c.get("/info").json()["models"]}
        assert {(m["backend"], m["precision"]) for m in info.values()} == {(backend, precision)}
        got = _answers(c)
        metrics = c.get("/metrics").text
    assert 'distil_inference_seconds_count{model="student",role="student"}' in metrics
    for key, want in reference.items():
        if precision == "fp32":  # the same numbers: ONNX Runtime against the torch reference
            np.testing.assert_allclose(got[key], want, atol=1e-4, rtol=0, err_msg=key)
        elif key.startswith("classify"):  # int8: the same decisions, close scores
            assert (got[key].argmax(1) == want.argmax(1)).all(), key
            np.testing.assert_allclose(got[key], want, atol=0.1, rtol=0, err_msg=key)
        else:
            cos = (got[key] * want).sum(1) / np.linalg.norm(got[key], axis=1) / np.linalg.norm(want, axis=1)
            assert cos.min() > 0.98, (key, cos.min())


def test_onnx_results_do_not_depend_on_batching(ckpts):
    texts = _texts(48, seed=5)
    bodies = [{"inputs": t, "model": "teacher"} for t in texts]
    settings = _variant_settings(ckpts, "onnx", "fp32", max_wait_ms=20.0, max_batch_size=16)
    alone, together, metrics = asyncio.run(_concurrent(settings, "/embed", bodies))
    for a, b in zip(alone, together, strict=True):
        assert a.status_code == b.status_code == 200
        diff = np.abs(np.array(a.json()["embeddings"]) - np.array(b.json()["embeddings"])).max()
        assert diff <= 1e-5
    assert 'distil_batch_size_bucket{le="1.0",model="teacher"' in metrics
    ones = float(metrics.split('distil_batch_size_bucket{le="1.0",model="teacher",role="teacher"} ')[1].split()[0])
    assert ones < 48 + 48  # some of the concurrent forwards held more than one input


def test_corrupt_export_is_not_served(ckpts, tmp_path):
    path = tmp_path / "student"
    shutil.copytree(ckpts["student"], path, ignore=shutil.ignore_patterns("onnx"))
    from model.export import export

    exp = export(path, "fp32")
    data = bytearray(exp.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    exp.path.write_bytes(bytes(data))
    settings = make_settings(ckpts, models=[ModelSpec(name="student", path=path, role="student", backend="onnx")])
    with TestClient(create_app(settings)) as c:
        for _ in range(500):
            health = c.get("/health")
            if health.status_code == 503:
                break
            asyncio.run(asyncio.sleep(0.02))
        assert health.status_code == 503
        assert "unhealthy" in health.json()["error"]  # a short word; the detail is in the log and /info
        assert "cached ONNX export is corrupt" in c.get("/info").json()["failure"]
        assert c.get("/ready").status_code == 503
        r = c.post("/classify", json={"inputs": "the movie was great"})
        assert r.status_code == 503


def test_export_replaced_with_its_manifest_fails_the_configured_digest(ckpts, tmp_path, caplog):
    """The manifest beside an export vouches only for corruption: an export replaced together with its manifest
    passes it. The digest the configuration records (the entry's sha256) refuses it; the right one loads."""
    import hashlib
    import json

    from model.export import export

    path = tmp_path / "student"
    shutil.copytree(ckpts["student"], path, ignore=shutil.ignore_patterns("onnx"))
    exp = export(path, "fp32")
    recorded = hashlib.sha256(exp.path.read_bytes()).hexdigest()

    def serve(sha256: str) -> TestClient:
        spec = ModelSpec(name="student", path=path, role="student", backend="onnx", sha256=sha256)
        return TestClient(create_app(make_settings(ckpts, models=[spec])))

    with serve(recorded) as c:
        wait_ready(c)
        assert c.post("/classify", json={"inputs": "the movie was great"}).status_code == 200
    data = bytearray(exp.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    exp.path.write_bytes(bytes(data))
    manifest = exp.path.with_suffix(".json")
    meta = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**meta, "sha256": hashlib.sha256(bytes(data)).hexdigest()}))
    assert export(path, "fp32").path == exp.path  # the manifest alone accepts the replaced file
    with caplog.at_level("ERROR"), serve(recorded) as c:
        for _ in range(500):
            if c.get("/health").status_code == 503:
                break
            asyncio.run(asyncio.sleep(0.02))
        failure = c.get("/info").json()["failure"]
        assert f"not the {recorded} its configuration records" in failure, failure
        assert c.get("/ready").status_code == 503
        assert c.post("/classify", json={"inputs": "the movie was great"}).status_code == 503
    assert "model loading failed" in caplog.text and f"not the {recorded}" in caplog.text


def test_sha256_is_an_onnx_exports_digest():
    with pytest.raises(ValidationError, match="sha256 is the digest of an ONNX export; backend 'torch' serves none"):
        ModelSpec(name="m", path="/m", sha256="0" * 64)
    with pytest.raises(ValidationError, match="sha256"):
        ModelSpec(name="m", path="/m", backend="onnx", sha256="not-a-digest")
    assert ModelSpec(name="m", path="/m", backend="onnx", sha256="a" * 64).sha256 == "a" * 64


@pytest.mark.parametrize(("entry", "device", "message"), [
    ({"backend": "tensorrt"}, "cpu", "backend must be one of torch, onnx, got 'tensorrt'"),
    ({"precision": "int4"}, "cpu", "precision must be one of fp32, int8, int8_mixed, fp16, bf16, got 'int4'"),
    ({"precision": "fp16"}, "cpu", "precision 'fp16' cannot run with backend 'torch' on cpu; valid there: fp32, int8"),
    ({"backend": "onnx", "precision": "bf16"}, "cpu", "valid there: fp32, int8, int8_mixed"),
    ({"precision": "int8_mixed"}, "cpu", "precision 'int8_mixed' cannot run with backend 'torch' on cpu; valid "
                                         "there: fp32, int8"),
    ({"precision": "int8"}, "cuda", "precision 'int8' cannot run with backend 'torch' on cuda; valid there: "
                                    "fp32, fp16, bf16"),
    ({"backend": "onnx", "precision": "int8"}, "cuda:0", "backend 'onnx' on cuda; valid there: fp32"),
])
def test_settings_refuse_what_the_device_cannot_run(entry, device, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(")):
        Settings(models=[{"name": "m", "path": "x", **entry}], device=device)


def test_settings_defaults_and_environment(monkeypatch):
    s = Settings(models=[{"name": "m", "path": "x"}], device="cpu")
    assert (s.models[0].backend, s.precision_of(s.models[0])) == ("torch", "fp32")
    monkeypatch.setenv("DISTIL_MODELS", '[{"name": "m", "path": "x", "backend": "onnx", "precision": "int8"}]')
    s = Settings(device="cpu")
    assert (s.models[0].backend, s.precision_of(s.models[0])) == ("onnx", "int8")


# One big batch fills ONNX Runtime's CPU arena; the run after it is small. Without shrinking, the arena
# keeps the big batch's memory; with it, that run hands it back. A fresh interpreter, so the
# numbers are this script's alone.
_ARENA = """
import sys, time
from app import backends
from app.backends.base import OutputSpec
from app.settings import ModelSpec, Settings
def rss_mb():
    return next(int(l.split()[1]) // 1024 for l in open("/proc/self/status") if l.startswith("VmRSS"))
spec = ModelSpec(name="teacher", path=sys.argv[1], role="teacher", backend="onnx", precision="fp32")
b = backends.load(spec, Settings(models=[spec], device="cpu", heap_trim_interval_s=float(sys.argv[2])))
b.forward([[5, 6, 7]], [OutputSpec("embed")])
base = rss_mb()
b._last_shrink = time.monotonic()  # the interval starts now: the big run below does not shrink
b.forward([[5] * 500] * 256, [OutputSpec("embed")] * 256)
peak = rss_mb()
time.sleep(0.6)
b.forward([[5, 6, 7]], [OutputSpec("embed")])  # past the interval (when there is one): this run shrinks
print(base, peak, rss_mb(), b.shrinks)
"""


def test_onnx_arena_gives_back_a_big_batch_memory(ckpts):
    def run(interval: float) -> tuple[int, ...]:
        out = subprocess.run([sys.executable, "-c", _ARENA, str(ckpts["teacher"]), str(interval)],
                             capture_output=True, text=True, cwd=ROOT, check=True).stdout.split()
        return tuple(map(int, out))

    _, kept_peak, kept, none = run(0.0)
    _, peak, shrunk, shrinks = run(0.5)
    assert none == 0 and kept > kept_peak - 20  # the arena holds the big batch's memory
    assert shrinks >= 1 and shrunk < kept - 100  # until a run shrinks it
