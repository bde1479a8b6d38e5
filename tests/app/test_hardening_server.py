"""Issue 14 with a real `python -m app` process: signals, a slow-body client, the connection
limit, and start-up refusals. Waits below are bounds on a hang, never measurements."""

from __future__ import annotations

import select
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.app.conftest import make_settings
from tests.app.hardening_support import (
    Gate,
    free_port,
    is_ready,
    metric_values,
    port_of,
    raw_request,
    serve_process,
    wait_until,
)
from tests.fixtures import write_tiny

pytestmark = pytest.mark.slow

LONG_TEXT = " ".join(["the movie was great but the plot"] * 60)  # ~420 tokens


@pytest.fixture(scope="module")
def slow_ckpt(tmp_path_factory):
    """Wide enough that a forward over 420 tokens takes milliseconds, not microseconds."""
    return write_tiny(tmp_path_factory.mktemp("slow") / "m", "bert", "base", seed=0, layers=4, hidden=256,
                      max_pos=512)


def _model(path, name: str = "m", role: str = "teacher") -> list[dict]:
    return [{"name": name, "path": str(path), "role": role}]


class Flood:
    """Clients posting long inputs in threads; each result is a status code or an error's class name."""

    def __init__(self, base: str, clients: int, inputs: int) -> None:
        self.results: list = []
        self.threads = [threading.Thread(target=self._one, args=(base, inputs)) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _one(self, base: str, inputs: int) -> None:
        try:
            r = httpx.post(f"{base}/embed", json={"inputs": [LONG_TEXT] * inputs, "model": "m"}, timeout=120)
            self.results.append(r.status_code)
        except httpx.TransportError as e:
            self.results.append(type(e).__name__)

    def join(self) -> list:
        for t in self.threads:
            t.join(150)
        return self.results


def _exit_code(p, timeout: float) -> int | None:
    """The process's exit code, or None if it is still running after ``timeout``."""
    try:
        return p.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def _in_flight(base: str) -> float:
    m = metric_values(httpx.get(f"{base}/metrics", timeout=5).text, "distil_in_flight_requests")
    return sum(m.values())


def test_sigterm_during_load_does_not_wait_for_the_load(slow_ckpt, tmp_path):
    """Four models, each warmed up with batches of 512 inputs: seconds of loading. SIGTERM while
    it runs stops the process without warming the rest, exit code 0."""
    models = [{"name": f"m{i}", "path": str(slow_ckpt), "role": "other"} for i in range(4)]
    env = {"DISTIL_MAX_BATCH_SIZE": "512", "DISTIL_GRACEFUL_TIMEOUT_S": "5"}
    with serve_process(tmp_path, models, env, wait="up") as p:
        wait_until(lambda: "warmed model m0" in p.text(), timeout=120, what="first model warmed")
        assert httpx.get(f"{p.base}/ready").status_code == 503
        p.proc.send_signal(signal.SIGTERM)
        code = _exit_code(p, 120)
        log = p.text()
        assert code == 0, log[-3000:]
        assert log.count("warmed model") < 4, "the whole load ran before the process stopped"


def test_second_sigterm_exits_at_once_with_a_nonzero_code(slow_ckpt, tmp_path):
    env = {"DISTIL_MAX_BATCH_SIZE": "1", "DISTIL_GRACEFUL_TIMEOUT_S": "120", "DISTIL_REQUEST_TIMEOUT_S": "120",
           "DISTIL_MAX_QUEUE_TOKENS": "1000000"}
    with serve_process(tmp_path, _model(slow_ckpt), env) as p:
        flood = Flood(p.base, clients=16, inputs=64)  # ~1000 forwards: many seconds of work
        wait_until(lambda: _in_flight(p.base) >= 8, what="load in flight")
        p.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert p.proc.poll() is None, "the first SIGTERM must drain, not exit"
        p.proc.send_signal(signal.SIGTERM)
        code = _exit_code(p, 30)
        results = flood.join()
        assert code not in (None, 0), (code, p.text()[-3000:])
        assert results.count(200) < 16, results  # the drain was cut short


def test_fractional_graceful_timeout_lets_a_short_request_finish(ckpts):
    """graceful_timeout_s=0.9 must not be rounded down to 0 (which cancels everything at once). The
    server of `python -m app` (its Server class and uvicorn config) in a thread, told SIGTERM as the
    signal handler tells it; a held forward finishes 0.2 s after it."""
    from app.__main__ import Server, uvicorn_config
    from app.main import create_app

    settings = make_settings(ckpts, warmup=False, graceful_timeout_s=0.9, port=free_port())
    app = create_app(settings)
    server = Server(uvicorn_config(app, settings), app.state.service.drain)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{settings.port}"
    wait_until(lambda: is_ready(base), what="ready")
    gate = Gate(app.state.service.backends["student"], hold=True)
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(httpx.post, f"{base}/classify", json={"inputs": "movie"}, timeout=30)
        assert gate.entered.wait(20)
        server.handle_exit(signal.SIGTERM, None)
        time.sleep(0.2)
        gate.release()
        assert fut.result().status_code == 200
    thread.join(30)
    assert not thread.is_alive()


def test_shutdown_is_bounded_by_the_graceful_timeout(slow_ckpt, tmp_path):
    """Far more queued work than graceful_timeout_s allows: the process still goes, and the
    clients it could not serve get an answer or a closed connection, not a hang."""
    env = {"DISTIL_MAX_BATCH_SIZE": "1", "DISTIL_GRACEFUL_TIMEOUT_S": "1.5", "DISTIL_REQUEST_TIMEOUT_S": "120",
           "DISTIL_MAX_QUEUE_TOKENS": "1000000"}
    with serve_process(tmp_path, _model(slow_ckpt), env) as p:
        flood = Flood(p.base, clients=16, inputs=64)
        wait_until(lambda: _in_flight(p.base) >= 8, what="load in flight")
        p.proc.send_signal(signal.SIGTERM)
        code = p.proc.wait(30)
        results = flood.join()
        assert code == 0, p.text()[-3000:]
        assert results.count(200) < 16 and len(results) == 16, results
        assert 500 not in results, results


def _trickle(sock: socket.socket, piece, most: int, every_s: float) -> tuple[bytes, int]:
    """Send ``piece(i)`` every ``every_s`` until the server answers or closes, at most ``most`` times;
    returns what it answered (read to the close: head and body may come in separate segments) and
    how many pieces went out."""
    answer, sent = b"", 0
    try:
        while sent < most:
            readable, _, _ = select.select([sock], [], [], every_s)
            if readable:
                sock.settimeout(5)
                while chunk := sock.recv(65536):
                    answer += chunk
                break
            sock.sendall(piece(sent))
            sent += 1
    except OSError:  # the server closed the connection under us
        pass
    finally:
        sock.close()
    return answer, sent


def test_slow_body_client_is_cut_off(ckpts, tmp_path):
    with serve_process(tmp_path, _model(ckpts["student"], role="student"), {"DISTIL_BODY_TIMEOUT_S": "1"}) as p:
        head = ("POST /embed HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                "Content-Length: 1999999\r\n\r\n")
        # one byte every 0.25 s: 15 s if never cut off
        answer, sent = _trickle(raw_request(port_of(p.base), head, b"{"), lambda i: b" ", 60, 0.25)
        assert sent < 60, "the server kept waiting for the body"
        if answer:
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b'"error_type"' in answer
        assert httpx.get(f"{p.base}/health").status_code == 200


def test_connection_limit(ckpts, tmp_path):
    with serve_process(tmp_path, _model(ckpts["student"], role="student"), {"DISTIL_LIMIT_CONCURRENCY": "4"}) as p:
        idle = [socket.create_connection(("127.0.0.1", port_of(p.base))) for _ in range(4)]
        try:
            wait_until(lambda: httpx.get(f"{p.base}/health", timeout=5).status_code == 503,
                       timeout=10, what="503 over the connection limit")
        finally:
            for s in idle:
                s.close()
        wait_until(lambda: httpx.get(f"{p.base}/health", timeout=5).status_code == 200,
                   timeout=10, what="served again under the limit")


def test_oversized_headers_are_a_431_and_trickled_ones_are_cut_with_h11(ckpts, tmp_path):
    env = {"DISTIL_HTTP": "h11", "DISTIL_MAX_HEADER_BYTES": "4096"}
    with serve_process(tmp_path, _model(ckpts["student"], role="student"), env) as p:
        r = httpx.post(f"{p.base}/embed", json={"inputs": "ok"}, headers={"x-note": "n" * 8000})
        assert r.status_code == 431 and r.json()["error_type"] == "payload_too_large", r.text
        assert "4,096-byte limit" in r.json()["error"]
        assert httpx.post(f"{p.base}/embed", json={"inputs": "ok"}, headers={"x-note": "n" * 2000}).status_code == 200
        # Headers that never end, a kilobyte at a time: h11 stops buffering at the limit.
        sock = raw_request(port_of(p.base), "GET /health HTTP/1.1\r\nHost: t\r\n", b"")
        answer, sent = _trickle(sock, lambda i: b"x-pad-%d: %s\r\n" % (i, b"p" * 1000), 64, 0.05)
        assert sent < 64, "64 KB of headers were buffered past a 4 KB limit"
        if answer:
            assert answer.startswith(b"HTTP/1.1 4"), answer[:200]
        assert httpx.get(f"{p.base}/health").status_code == 200


def test_empty_api_key_refused_at_start_up(ckpts, tmp_path):
    with serve_process(tmp_path, _model(ckpts["student"], role="student"), {"DISTIL_API_KEY": ""},
                       wait=None) as p:
        def settled() -> bool:
            if p.proc.poll() is not None:
                return True
            return httpx.get(f"{p.base}/health", timeout=2).status_code == 200

        wait_until(settled, timeout=90, what="exit or serve")
        assert p.proc.poll() not in (None, 0), "started with an empty API key"
        assert "api_key" in p.text().lower()
