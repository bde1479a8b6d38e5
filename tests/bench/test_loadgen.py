"""The load generator's statistics against a fake server with known delays, and a smoke run of
the whole sweep against the real app with tiny models."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from lab.loadgen import CLIENTS, LeanClient, Level, percentile, run_level

LOCK = asyncio.Lock()


async def fake_classify(request):
    body = await request.json()
    text = body["inputs"][0]
    if text == "err":
        return JSONResponse({"error": "x", "error_type": "overloaded"}, status_code=503)
    if text.startswith("serial"):
        async with LOCK:  # one at a time: a saturated server
            await asyncio.sleep(0.05)
    else:
        await asyncio.sleep(int(text[1:]) / 1000)
    return JSONResponse({"ok": True}, headers={"x-queue-time": "1.5", "x-inference-time": "2.5",
                                              "x-tokenization-time": "0.5", "x-total-time": "4.5"})


async def streamed(request):
    if request.headers.get("authorization") != "Bearer k":
        return JSONResponse({"error": "no key"}, status_code=401)

    async def chunks():
        for part in (b'{"a":', b' 1}'):
            yield part

    return StreamingResponse(chunks(), media_type="application/json", headers={"x-total-time": "7"})


@contextlib.contextmanager
def serve(app, **config):
    """A real uvicorn server for ``app`` on a free port, in a thread; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        t.join(5)


@pytest.fixture(scope="module")
def fake_url():
    app = Starlette(routes=[Route("/classify", fake_classify, methods=["POST"]),
                            Route("/streamed", streamed, methods=["POST"])])
    with serve(app) as url:
        yield url


def test_percentile_interpolates():
    xs = list(range(1, 101))
    assert percentile(xs, 50) == pytest.approx(50.5)
    assert percentile(xs, 90) == pytest.approx(90.1)
    assert percentile([3.0], 99) == 3.0


@pytest.mark.parametrize("client", CLIENTS)
def test_closed_loop_percentiles_match_known_delays(fake_url, client):
    delays = [10 * (i % 10 + 1) for i in range(100)]  # 10..100 ms, uniform
    inputs = [([f"d{d}"], 3) for d in delays]
    lv = Level("m", "/classify", "short", "closed", concurrency=10, requests=100, duration_s=30, warmup_requests=2)
    s = asyncio.run(run_level(fake_url, lv, inputs, client=client))
    assert s.ok == 100 and s.errors == {}
    # Known: p50 of 10..100 is 55 ms, p90 is 91 ms, max 100 ms. The client and HTTP add a little,
    # and a loaded machine more: the upper bounds only catch a wrong percentile (p90 for p50, ...).
    assert 54 <= s.latency_ms["p50"] <= 85
    assert 90 <= s.latency_ms["p90"] <= 130
    assert 100 <= s.latency_ms["max"] <= 250
    assert s.server_ms["queue_ms"] == 1.5 and s.server_ms["inference_ms"] == 2.5
    assert s.tokens_per_s == pytest.approx(3 * s.inputs_per_s)


@pytest.mark.parametrize("client", CLIENTS)
def test_errors_are_counted_by_status(fake_url, client):
    inputs = [(["err"], 1) if i % 4 == 0 else (["d1"], 1) for i in range(40)]
    lv = Level("m", "/classify", "short", "closed", concurrency=4, requests=40, duration_s=30, warmup_requests=0)
    s = asyncio.run(run_level(fake_url, lv, inputs, client=client))
    assert s.sent == 40 and s.ok == 30 and s.errors == {"503": 10}


@pytest.mark.parametrize("client", CLIENTS)
def test_connection_errors_are_counted_not_dropped(client):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens here
    lv = Level("m", "/classify", "short", "closed", concurrency=2, requests=6, duration_s=10, warmup_requests=0)
    s = asyncio.run(run_level(f"http://127.0.0.1:{port}", lv, [(["d1"], 1)], client=client))
    assert s.sent == 6 and s.ok == 0 and s.errors == {"ConnectError": 6}


@pytest.mark.parametrize("client", CLIENTS)
def test_open_loop_arrival_rate_and_no_coordinated_omission(fake_url, client):
    lv = Level("m", "/classify", "short", "open", rate=50, requests=1000, duration_s=3, warmup_requests=0)
    s = asyncio.run(run_level(fake_url, lv, [(["d5"], 1)], seed=1, client=client))
    assert 110 <= s.sent <= 190  # Poisson, 50/s for 3 s
    assert s.offered_rate == pytest.approx(50, rel=0.2)
    # A server that does 20 req/s, offered 40 req/s for 1 s: requests queue, and the open loop
    # reports it (latency from the scheduled start), where a closed loop would not.
    lv = Level("m", "/classify", "short", "open", rate=40, requests=1000, duration_s=1, warmup_requests=0)
    s = asyncio.run(run_level(fake_url, lv, [(["serial"], 1)], seed=2, client=client))
    assert s.latency_ms["p99"] > 600
    lv = Level("m", "/classify", "short", "closed", concurrency=1, requests=20, duration_s=30, warmup_requests=0)
    closed = asyncio.run(run_level(fake_url, lv, [(["serial"], 1)], client=client))
    assert closed.latency_ms["p99"] < 120


def test_lean_client_reads_chunked_bodies_and_sends_headers(fake_url):
    """The lean client against a route that streams its answer in chunks, twice on one connection."""

    async def twice():
        c = LeanClient(fake_url, headers={"Authorization": "Bearer k"})
        try:
            return [await c.post("/streamed", {"x": 1}) for _ in range(2)], len(c._idle)
        finally:
            await c.aclose()

    results, idle = asyncio.run(twice())
    assert [status for status, _ in results] == [200, 200]
    assert results[0][1]["transfer-encoding"] == "chunked" and results[0][1]["x-total-time"] == "7"
    assert idle == 1  # one keep-alive connection, reused for the second request


def test_lean_client_resends_once_when_the_server_closed_an_idle_connection():
    async def apart(url):
        c = LeanClient(url)
        try:
            first = await c.post("/classify", {"inputs": ["d1"]})
            await asyncio.sleep(0.6)  # the server drops the idle keep-alive connection meanwhile
            return first, await c.post("/classify", {"inputs": ["d1"]})
        finally:
            await c.aclose()

    app = Starlette(routes=[Route("/classify", fake_classify, methods=["POST"])])
    with serve(app, timeout_keep_alive=0.2) as url:
        first, second = asyncio.run(apart(url))
    assert first[0] == second[0] == 200


def test_lean_client_refuses_https():
    with pytest.raises(ValueError, match="plain http"):
        LeanClient("https://example.com")


@pytest.mark.slow
def test_smoke_sweep_against_the_real_app(tmp_path):
    from bench.__main__ import main
    from tests.fixtures import tiny_pair

    tiny_pair(tmp_path / "models")
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- bench:start -->\nold\n<!-- bench:end -->\n")
    main(["sweep", "--start-server", "--models-dir", str(tmp_path / "models"), "--sweep", "quick",
          "--out", str(tmp_path / "out"), "--readme", str(readme), "--accuracy", str(tmp_path / "none.json")])
    data = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert {r["level"]["model"] for r in data["results"]} == {"teacher", "student"}
    assert any(r["level"]["mode"] == "open" for r in data["results"])
    # Every request answered; closed-loop levels always send (an open-loop level at a slow machine's
    # low rate may schedule no arrival inside its half second).
    results = data["results"]
    assert all(r["ok"] == r["sent"] and not r["errors"] for r in results), [r["errors"] for r in results]
    assert all(r["ok"] > 0 for r in data["results"] if r["level"]["mode"] == "closed")
    # The service ran on this machine: every level splits its CPU time, client vs service. Over the
    # run each side did work (HTTP on the event loop, forwards on the model threads), so a split that
    # read the wrong process or thread shows up as a zero. (Per level, /proc's 10 ms ticks can
    # round a short level's share to 0; the run's total cannot.)
    cpu = [(r["sent"], r["extra"]["cpu"]) for r in data["results"] if r["sent"]]  # no request sent: nothing to split
    for side in ("client_ms", "server_loop_ms", "server_other_ms"):
        assert all(c[side] >= 0 for _, c in cpu) and sum(n * c[side] for n, c in cpu) > 0, side
    assert all(0 < c["cores_busy"] <= data["environment"]["cores"] + 0.5 for _, c in cpu)
    assert "load generator / event loop / model threads" in (tmp_path / "out" / "bench.md").read_text()
    # Overhead at concurrency 1 from alternating blocks, for each model, no request lost.
    pairs = {x["model"]: x for x in data["paired"]}
    assert set(pairs) == {"teacher", "student"} and all(x["errors"] == 0 for x in pairs.values())
    assert all(x["http_p50_ms"] > 0 and x["inprocess_p50_ms"] > 0 for x in pairs.values())
    assert data["summary"]["per_model"]["student"]["overhead_c1_ms"] == pytest.approx(pairs["student"]["overhead_ms"])
    assert data["inprocess"] and data["environment"]["cores"] >= 1 and data["padding_ratio"]
    for png in ("latency.png", "throughput.png", "speedup.png"):
        assert (tmp_path / "out" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "out" / "bench.md").read_text()
    assert "| student | /classify | short | c=1 |" in md
    assert "| student | /v2/models/{name}/infer | short | c=1 |" in md  # the Open Inference Protocol beside it
    assert "p50 latency at concurrency 1" in readme.read_text() and "old" not in readme.read_text()
