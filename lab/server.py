"""A service process for a measurement: ``python -m app`` started on a port, waited for, and stopped the way
an orchestrator stops it (SIGTERM: the drain, exit 0). Shared by the benchmarks, the study's variants and
the tests that measure through the real HTTP path."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(models_dir: Path, port: int, extra_env: dict | None = None,
                 config: Path | None = None) -> subprocess.Popen:
    """``python -m app`` serving ``config`` (a serve.json: what `make serve` serves, each model's backend and
    precision included), else the fp32 student and teacher of ``models_dir``."""
    env_vars = {k: v for k, v in os.environ.items() if k not in ("DISTIL_MODELS", "DISTIL_CONFIG")}
    if config is not None:
        env_vars["DISTIL_CONFIG"] = str(Path(config).resolve())
    else:
        models = [{"name": "student", "path": str(models_dir / "student"), "role": "student"},
                  {"name": "teacher", "path": str(models_dir / "teacher"), "role": "teacher"}]
        env_vars["DISTIL_MODELS"] = json.dumps(models)
    env_vars.update(extra_env or {})
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-server-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT,
                            env=env_vars, stdout=log, stderr=subprocess.STDOUT)
    print(f"[bench] service started, pid {proc.pid}, log {log.name}", file=sys.stderr)
    return proc


def wait_ready(url: str, proc: subprocess.Popen | None, timeout: float = 600, path: str = "/ready") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the service exited with code {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} not ready after {timeout}s")


def stop_server(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGTERM)  # by PID: graceful drain, exit 0
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
    print(f"[bench] service pid {proc.pid} stopped (exit {proc.returncode})", file=sys.stderr)
