"""bench.loop_profile: the event loop's CPU per request by layer, from a real profiled `python -m app`."""

from __future__ import annotations

import json

from bench.loop_profile import LAYERS, OTHER, layer_of, main
from tests.fixtures import tiny_pair


def test_files_map_to_their_layers():
    site = "/x/.venv/lib/python3.11/site-packages/"
    assert layer_of("/w/app/api/middleware.py", "__call__").startswith("middleware")
    assert layer_of("/w/app/api/routing.py", "resolve").startswith("middleware")
    assert layer_of(site + "uvicorn/protocols/http/httptools_impl.py", "send").startswith("HTTP parsing")
    assert layer_of(site + "pydantic/main.py", "x").startswith("validation")
    assert layer_of("/w/app/core/engine.py", "submit").startswith("hand-off")
    assert layer_of("/py/lib/python3.11/asyncio/events.py", "_run").startswith("asyncio")
    assert layer_of("/w/somewhere.py", "f") == OTHER


def test_a_real_profile_splits_the_loops_time(tmp_path):
    ckpt = tiny_pair(tmp_path / "ckpts")["student"]
    out = main(["--model-dir", str(ckpt), "--requests", "300", "--concurrency", "8", "--endpoint", "/embed",
                "--out", str(tmp_path / "profile.json")])
    s = out["summary"]
    assert out["ok"] == s["requests"] >= 290
    layers = {r["layer"]: r for r in s["layers"]}
    assert abs(sum(r["share"] for r in s["layers"]) - 1) < 1e-9
    named = [name for name, _ in LAYERS]
    for name in ("HTTP parsing and protocol (uvicorn, httptools, h11)", named[1], named[4]):
        assert layers[name]["ms_per_request"] > 0, (name, layers.get(name))
    assert layers.get(OTHER, {"share": 0})["share"] < 0.3, layers.get(OTHER)  # the layers account for most of it
    assert json.loads((tmp_path / "profile.json").read_text())["summary"] == s
