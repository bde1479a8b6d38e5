"""Readiness around warm-up and draining; a real uvicorn process stopped by SIGTERM under load."""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.core.service import Status
from app.main import create_app
from lab.server import wait_ready as wait_url_ready
from tests.app.conftest import make_settings, wait_ready

ROOT = Path(__file__).resolve().parents[2]


def test_ready_only_after_load_and_warmup(ckpts):
    gate = threading.Event()
    app = create_app(make_settings(ckpts), before_load=gate.wait)
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200  # alive while loading
        r = c.get("/ready")
        assert r.status_code == 503 and "loading" in r.json()["error"]
        assert c.post("/embed", json={"inputs": "x"}).status_code == 503
        gate.set()
        wait_ready(c)
        assert c.get("/ready").json() == {"status": "ready"}
        assert c.post("/embed", json={"inputs": "x"}).status_code == 200


def test_the_loaded_heap_is_frozen_out_of_the_collectors_walks(ckpts):
    """Once ready, what loading made is out of the cyclic collector's full walks (gc.freeze), so a
    full collection under load no longer stops the event loop for the whole heap."""
    gc.unfreeze()
    gate = threading.Event()
    app = create_app(make_settings(ckpts), before_load=gate.wait)
    with TestClient(app) as c:
        assert gc.get_freeze_count() == 0  # not while loading
        gate.set()
        wait_ready(c)
        frozen = gc.get_freeze_count()
        assert frozen > 10_000, frozen
        assert c.post("/embed", json={"inputs": "x"}).status_code == 200


def test_draining_refuses_new_work(ckpts):
    app = create_app(make_settings(ckpts, warmup=False))
    with TestClient(app) as c:
        wait_ready(c)
        app.state.service.drain()
        assert c.get("/ready").status_code == 503
        r = c.post("/embed", json={"inputs": "x"})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert c.get("/health").status_code == 200
        app.state.service.status = Status.READY


def _wait_ready(base: str, timeout: float = 60, log: Path | None = None) -> None:
    try:
        wait_url_ready(base, None, timeout)
    except SystemExit as e:  # the server's log says why
        raise AssertionError(log.read_text() if log else str(e)) from None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_sigterm_under_load_completes_accepted_requests(ckpts, tmp_path):
    port = _free_port()
    models = [{"name": "teacher", "path": str(ckpts["teacher"]), "role": "teacher"}]
    env = {**os.environ, "DISTIL_MODELS": json.dumps(models), "DISTIL_DEVICE": "cpu",
           "DISTIL_MAX_BATCH_SIZE": "1", "DISTIL_GRACEFUL_TIMEOUT_S": "100",
           # The drain is under test, not the deadline: on a loaded 2-core machine 128 serial forwards
           # can take longer than the default 30 s request timeout.
           "DISTIL_REQUEST_TIMEOUT_S": "120"}
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "app", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, log=tmp_path / "server.log")

        results: list = []
        long_text = " ".join(["the movie was great but the plot"] * 14)  # ~100 tokens: a slow-ish forward

        def client(i: int) -> None:
            try:
                r = httpx.post(f"{base}/embed", json={"inputs": [long_text] * 8}, timeout=150)
                results.append(r.status_code)
            except httpx.TransportError as e:
                results.append(type(e).__name__)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        # Wait until every request is accepted (in flight or answered) and some are still
        # queued, then stop the server.
        for _ in range(500):
            m = httpx.get(f"{base}/metrics", timeout=5).text
            values = {ln.split("{")[0]: float(ln.split()[-1]) for ln in m.splitlines()
                      if ln.startswith(("distil_in_flight_requests{", "distil_requests_total{"))}
            accepted = values.get("distil_in_flight_requests", 0) + values.get("distil_requests_total", 0)
            if accepted >= 16:
                break
            time.sleep(0.005)
        assert values.get("distil_in_flight_requests", 0) > 0, "load finished before SIGTERM"
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(150)
        code = proc.wait(150)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    server_log = (tmp_path / "server.log").read_text()
    assert code == 0, server_log
    assert results == [200] * 16, (results, server_log[-3000:])
    lines = [json.loads(ln) for ln in server_log.splitlines() if ln.startswith("{")]
    access = [ln for ln in lines if ln.get("logger") == "app.access" and ln.get("path") == "/embed"]
    assert len(access) == 16 and all(a["status"] == 200 and a["request_id"] for a in access)
    assert all({"tokens", "inputs", "total_ms", "queue_ms", "inference_ms", "model"} <= set(a) for a in access)


def test_inputs_of_a_departed_client_are_dropped(tmp_path):
    """A client that disconnects while its inputs are queued costs no forward pass."""
    import uvicorn

    from app.main import create_app as make_app
    from app.settings import ModelSpec, Settings
    from tests.fixtures import write_tiny

    slow = write_tiny(tmp_path / "slow", "bert", "base", seed=0, layers=4, hidden=256, max_pos=512)
    port = _free_port()
    settings = Settings(models=[ModelSpec(name="teacher", path=slow, role="teacher")], device="cpu",
                        max_batch_size=1, warmup=False)
    app = make_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base)
        long_text = " ".join(["the movie was great but the plot"] * 60)  # 420 tokens: ~10 ms a forward
        with pytest.raises(httpx.TimeoutException):  # the client gives up and closes the connection
            httpx.post(f"{base}/embed", json={"inputs": [long_text] * 64, "model": "teacher"}, timeout=0.2)
        time.sleep(1.0)
        metrics = httpx.get(f"{base}/metrics").text
        dropped = [ln for ln in metrics.splitlines()
                   if ln.startswith('distil_dropped_inputs_total{model="teacher",reason="cancelled"')]
        assert dropped and float(dropped[0].split()[-1]) > 0, metrics[-2000:]
        forwards = [ln for ln in metrics.splitlines()
                    if ln.startswith('distil_inference_seconds_count{model="teacher"')]
        assert float(forwards[0].split()[-1]) < 64  # not every input was run
        assert 'status="499"' in metrics
    finally:
        server.should_exit = True
        t.join(10)
