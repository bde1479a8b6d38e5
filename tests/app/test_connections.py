"""Issue 26, "connections have deadlines", with a real `python -m app` process and raw sockets, for
each HTTP parser: a request head is held to header_timeout_s and max_header_bytes while it arrives,
idle and half-open sockets are closed, and the ops port answers the probes while clients hold every
connection of the API port. Waits are bounds on a hang, never measurements."""

from __future__ import annotations

import contextlib
import resource
import select
import selectors
import signal
import socket
import time

import httpx
import pytest

from tests.app.hardening_support import free_port, port_of, serve_process

pytestmark = pytest.mark.slow

HEADER_TIMEOUT_S = 2.0
KEEP_ALIVE_S = 1.0
MAX_HEADER_BYTES = 8192
FLOOD = 500  # half-open sockets, against limit_concurrency=256
PARTIAL_HEAD = b"POST /classify HTTP/1.1\r\nHost: x\r\n"


@pytest.fixture(scope="module", params=["h11", "httptools"])
def server(request, ckpts, tmp_path_factory):
    """One server per parser; its own ops port. The flood needs file descriptors on both sides."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * FLOOD:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8 * FLOOD), hard))  # inherited by the server
    ops_port = free_port()
    env = {"DISTIL_HTTP": request.param, "DISTIL_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
           "DISTIL_KEEP_ALIVE_S": str(KEEP_ALIVE_S), "DISTIL_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
           "DISTIL_OPS_PORT": str(ops_port)}
    models = [{"name": "student", "path": str(ckpts["student"]), "role": "student"}]
    with serve_process(tmp_path_factory.mktemp("connections"), models, env) as p:
        p.ops = f"http://127.0.0.1:{ops_port}"  # type: ignore[attr-defined]
        yield p


def _connect(p, head: bytes = b"") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port_of(p.base)), timeout=10)
    if head:
        s.sendall(head)
    return s


def _closed_within(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the server closed ``sock`` (EOF or reset), None if it was still open after
    ``timeout``; anything it sent before the close is read and dropped."""
    start = time.monotonic()
    while (left := timeout - (time.monotonic() - start)) > 0:
        if not select.select([sock], [], [], left)[0]:
            break
        try:
            if not sock.recv(65536):
                return time.monotonic() - start
        except ConnectionError:
            return time.monotonic() - start
    return None


def _get(sock: socket.socket) -> bytes:
    """One whole GET /health on a keep-alive connection; its response, read to the end of its body."""
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
        chunk = sock.recv(65536)
        assert chunk, f"closed mid-response: {answer!r}"
        answer += chunk
    return answer


def test_half_open_flood_is_closed_in_time_and_the_ops_port_answers_throughout(server):
    socks, sel = [], selectors.DefaultSelector()
    try:
        for _ in range(FLOOD):
            s = _connect(server, PARTIAL_HEAD)
            s.setblocking(False)
            socks.append(s)
            sel.register(s, selectors.EVENT_READ)
        opened = time.monotonic()
        # The flood holds more connections than limit_concurrency allows: the API port's probe fails...
        assert httpx.get(f"{server.base}/health", timeout=5).status_code == 503
        open_left, slow_probes = set(socks), []
        deadline = opened + HEADER_TIMEOUT_S + 1.0
        next_probe = 0.0
        while open_left and time.monotonic() < deadline:
            if time.monotonic() >= next_probe:  # ... the ops port's does not, at any time
                t0 = time.monotonic()
                r = httpx.get(f"{server.ops}/health", timeout=1.0)
                assert r.status_code == 200, r.text
                slow_probes += [time.monotonic() - t0] if time.monotonic() - t0 > 1.0 else []
                next_probe = time.monotonic() + 0.2
            for key, _ in sel.select(timeout=0.05):
                try:
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                except ConnectionError:
                    data = b""
                if not data:
                    sel.unregister(key.fileobj)
                    open_left.discard(key.fileobj)  # type: ignore[arg-type]
        assert not open_left, f"{len(open_left)} of {FLOOD} half-open sockets still open after " \
                              f"header_timeout_s + 1 s"
        assert not slow_probes, slow_probes
        assert httpx.get(f"{server.base}/health", timeout=5).status_code == 200
    finally:
        sel.close()
        for s in socks:
            s.close()


def test_a_head_past_the_limit_is_refused_while_it_arrives(server):
    """1 MB of header, 8 KiB at a time: refused (431 or a close) within 1 s of passing the limit,
    having taken at most the limit plus one read of the socket (256 KiB) and what the kernel buffers."""
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nx-big: "
    sock = _connect(server, head)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    sent, past_limit, answer, piece = len(head), None, b"", b"a" * 8192
    try:
        while sent < 1_000_000:
            if select.select([sock], [], [], 0.005)[0]:
                with contextlib.suppress(ConnectionError):
                    while chunk := sock.recv(65536):
                        answer += chunk
                break
            sock.sendall(piece)
            sent += len(piece)
            if past_limit is None and sent > MAX_HEADER_BYTES:
                past_limit = time.monotonic()
    except ConnectionError:  # the server closed under us
        pass
    refused_after = time.monotonic() - past_limit if past_limit else None
    sock.close()
    assert sent < 1_000_000, "the whole megabyte of headers was taken"
    assert sent <= MAX_HEADER_BYTES + 256 * 1024 + 128 * 1024, sent
    assert refused_after is not None and refused_after < 1.0, refused_after
    if answer:
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
        assert b"connection: close" in answer.lower() and b'"error_type":"payload_too_large"' in answer
    assert httpx.get(f"{server.base}/health", timeout=5).status_code == 200


def test_idle_connections_are_closed(server):
    """After a response, an idle keep-alive connection goes after keep_alive_s (uvicorn did that
    already); a connection that never sends a byte goes after header_timeout_s (nothing closed it)."""
    kept = _connect(server)
    silent = _connect(server)
    try:
        assert _get(kept).startswith(b"HTTP/1.1 200")
        assert _closed_within(kept, KEEP_ALIVE_S + 1.0) is not None, "idle keep-alive connection kept"
        assert _closed_within(silent, HEADER_TIMEOUT_S + 1.0) is not None, "silent connection kept"
    finally:
        kept.close()
        silent.close()


def test_a_second_head_that_stalls_is_closed_within_the_header_timeout(server):
    """The keep-alive timer stops at the first byte of the next request; the head deadline starts there."""
    sock = _connect(server)
    try:
        assert _get(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        took = _closed_within(sock, HEADER_TIMEOUT_S + 1.0)
        assert took is not None, "a stalled second head kept its connection"
        # ... and a head that arrives whole in pieces, in time, is served
        with _connect(server) as ok:
            _get(ok)
            ok.sendall(b"GET /health HTTP/1.1\r\n")
            time.sleep(0.3)
            assert _get_rest(ok, b"Host: x\r\n\r\n").startswith(b"HTTP/1.1 200")
    finally:
        sock.close()


def test_pipelined_requests_are_answered_and_a_partial_one_after_them_is_cut(server):
    sock = _connect(server, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /ready HTTP/1.1\r\nHost: x\r\n\r\n"
                            b"GET /health HTTP/1.1\r\n")
    try:
        answer, start = b"", time.monotonic()
        sock.settimeout(HEADER_TIMEOUT_S + 2.0)
        with contextlib.suppress(ConnectionError):
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.count(b"HTTP/1.1 200") == 2, answer
        assert time.monotonic() - start < HEADER_TIMEOUT_S + 1.0
    finally:
        sock.close()


def _get_rest(sock: socket.socket, rest: bytes) -> bytes:
    sock.sendall(rest)
    answer = b""
    while not answer.endswith(b"}"):
        chunk = sock.recv(65536)
        assert chunk, f"closed mid-response: {answer!r}"
        answer += chunk
    return answer


def test_the_ops_port_serves_only_the_probes_and_metrics(server):
    assert httpx.get(f"{server.ops}/ready", timeout=5).status_code == 200
    assert "distil_" in httpx.get(f"{server.ops}/metrics", timeout=5).text
    r = httpx.post(f"{server.ops}/classify", json={"inputs": "movie"}, timeout=5)
    assert r.status_code == 404 and r.json()["error_type"] == "not_found", r.text


def test_sigterm_stops_both_ports(ckpts, tmp_path):
    ops_port = free_port()
    models = [{"name": "student", "path": str(ckpts["student"]), "role": "student"}]
    with serve_process(tmp_path, models, {"DISTIL_OPS_PORT": str(ops_port), "DISTIL_GRACEFUL_TIMEOUT_S": "5"}) as p:
        ops = f"http://127.0.0.1:{ops_port}"
        with httpx.Client() as kept:  # a keep-alive connection to the ops port does not hold the exit
            assert kept.get(f"{ops}/ready", timeout=5).status_code == 200
            p.proc.send_signal(signal.SIGTERM)
            assert p.proc.wait(30) == 0, p.text()[-3000:]
        for url in (p.base, ops):
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"{url}/health", timeout=5)
