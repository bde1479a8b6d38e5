"""What the hardening tests share: a live server (uvicorn in a thread, or `python -m app` in a
subprocess), raw sockets for clients no HTTP library will imitate, and seams on a backend's forward.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from app.main import create_app
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``check`` until it holds; a bound on waiting, never a measurement."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if check():
                return
        time.sleep(0.02)
    raise AssertionError(f"{what} did not happen within {timeout}s")


def is_ready(base: str) -> bool:
    return httpx.get(f"{base}/ready", timeout=5).status_code == 200


@dataclass
class Live:
    app: object
    base: str
    server: uvicorn.Server

    @property
    def service(self):
        return self.app.state.service  # type: ignore[attr-defined]


@contextlib.contextmanager
def live(settings: Settings, before_load: Callable[[], None] | None = None, ready: bool = True) -> Iterator[Live]:
    """The app under a real uvicorn in a thread of this process: HTTP on a socket, and the
    service object at hand for the seams."""
    app = create_app(settings, before_load=before_load)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{base}/health", timeout=5).status_code in (200, 503), what="server up")
        if ready:
            wait_until(lambda: is_ready(base), what="ready")
        yield Live(app, base, server)
    finally:
        server.should_exit = True
        thread.join(30)


@dataclass
class Proc:
    proc: subprocess.Popen
    base: str
    log: Path

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


@contextlib.contextmanager
def serve_process(tmp_path: Path, models: list[dict], env: dict[str, str] | None = None,
                  wait: str | None = "ready") -> Iterator[Proc]:
    """`python -m app` as an operator starts it, configured through DISTIL_* variables.
    ``wait``: "ready", "up" (/health answers at all) or None."""
    port = free_port()
    full_env = {**os.environ, "DISTIL_MODELS": json.dumps(models), "DISTIL_DEVICE": "cpu", **(env or {})}
    full_env.pop("DISTIL_CONFIG", None)
    log = tmp_path / f"server-{port}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app", "--port", str(port)], cwd=ROOT, env=full_env,
                                stdout=out, stderr=subprocess.STDOUT)
    p = Proc(proc, f"http://127.0.0.1:{port}", log)
    try:
        if wait:
            def up() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"server exited with {proc.returncode}:\n{p.text()[-3000:]}")
                r = httpx.get(f"{p.base}/{'ready' if wait == 'ready' else 'health'}", timeout=5)
                return r.status_code == 200 if wait == "ready" else True
            wait_until(up, timeout=90, what=f"server {wait}")
        yield p
    finally:
        p.stop()


def metric_values(text: str, name: str) -> dict[str, float]:
    """Samples of one Prometheus metric: label string -> value."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, _, value = line.rpartition(" ")
            out[labels[len(name):]] = float(value)
    return out


class Gate:
    """Wraps a backend's ``forward``: records which rows ran, can hold a forward until released,
    and can fail any batch that contains a given token id (a 'poisoned' input)."""

    def __init__(self, backend, hold: bool = False, poison: int | None = None, delay_s: float = 0.0) -> None:
        self.backend, self.inner = backend, backend.forward
        self.released = threading.Event()
        if not hold:
            self.released.set()
        self.entered = threading.Event()
        self.poison, self.delay_s = poison, delay_s
        self.batches: list[list[list[int]]] = []
        backend.forward = self

    def __call__(self, ids, specs, *segments):
        self.batches.append([list(r) for r in ids])
        self.entered.set()
        self.released.wait(60)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.poison is not None and any(self.poison in r for r in ids):
            raise RuntimeError("poisoned input in this batch")
        return self.inner(ids, specs, *segments)

    def release(self) -> None:
        self.released.set()

    def restore(self) -> None:
        self.released.set()
        self.backend.forward = self.inner


def raw_request(port: int, head: str, body: bytes = b"") -> socket.socket:
    """Open a connection and send a request head (and the start of a body); the caller goes on."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(head.encode("latin-1") + body)
    return s


def port_of(base: str) -> int:
    return int(base.rsplit(":", 1)[1])
