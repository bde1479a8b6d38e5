"""make bench measures what make serve serves (issue 29): a serve.json's models, each at its backend and
precision, through the real service, and in-process as the same backend, so the service/in-process ratio
compares like with like."""

from __future__ import annotations

import json
import shutil

import httpx

from app.backends.base import OutputSpec
from app.backends.onnx import OnnxBackend
from bench.inprocess import load_backend, spec_of
from lab.server import free_port, start_server, stop_server, wait_ready
from tests.fixtures import tiny_pair


def test_the_served_variant_is_the_one_measured_in_process(tmp_path):
    ckpts = tiny_pair(tmp_path / "ckpts")
    student = tmp_path / "student"
    shutil.copytree(ckpts["student"], student)
    config = tmp_path / "serve.json"
    config.write_text(json.dumps({"models": [
        {"name": "student", "path": str(student), "role": "student", "backend": "onnx", "precision": "int8"},
        {"name": "teacher", "path": str(ckpts["teacher"]), "role": "teacher"}]}))
    port = free_port()
    proc = start_server(tmp_path, port, {"DISTIL_DEVICE": "cpu"}, config=config)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, timeout=120)
        info = {m["name"]: m for m in httpx.get(f"{url}/info").json()["models"]}
        assert (info["student"]["backend"], info["student"]["precision"]) == ("onnx", "int8")
        texts = ["the movie was great", "a dull plot and bad actors"]
        served = httpx.post(f"{url}/classify", json={"inputs": texts, "raw_scores": True}).json()["predictions"]
    finally:
        stop_server(proc)
    backend = load_backend(spec_of(info["student"]), info["student"]["device"])
    assert isinstance(backend, OnnxBackend) and backend.precision == "int8"
    here = backend.forward(backend.tokenize(texts), [OutputSpec("classify", raw_scores=True)] * len(texts))
    for row, pred in zip(here, served, strict=True):
        by_label = {p["label"]: p["score"] for p in pred}
        assert max(abs(v - by_label[label]) for v, label in zip(row, backend.labels, strict=True)) < 1e-4
