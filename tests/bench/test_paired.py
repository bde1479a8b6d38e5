"""Overhead at concurrency 1 in alternating blocks, against the real app on a real uvicorn."""

from __future__ import annotations

import asyncio

from app.main import create_app
from app.settings import ModelSpec
from bench.paired import overhead
from lab.server import wait_ready
from tests.app.conftest import make_settings
from tests.bench.test_loadgen import serve
from tests.fixtures import tiny_pair


def test_alternating_blocks_on_a_classifier_and_an_embedder(tmp_path):
    ckpts = tiny_pair(tmp_path)
    app = create_app(make_settings(ckpts))
    inputs = [(["the film was good"], 6), (["a slow and tedious story about nothing much"], 11)]
    with serve(app) as url:
        wait_ready(url, None, timeout=60)
        results = {name: asyncio.run(overhead(url, ModelSpec(name=name, path=ckpts[name], role="other"), "cpu",
                                              inputs, rounds=3, block=4))
                   for name in ("student", "embedder")}
    assert results["student"]["endpoint"] == "/classify" and results["embedder"]["endpoint"] == "/embed"
    for r in results.values():
        assert r["errors"] == 0 and r["rounds"] == 3 and r["block"] == 4
        assert r["http_p50_ms"] > 0 and r["inprocess_p50_ms"] > 0
        assert r["overhead_ms"] == r["http_p50_ms"] - r["inprocess_p50_ms"]
