"""Helpers the deployment tests share: tools on PATH, free ports, waiting for a URL, and one real
service scraped by a real Prometheus under load."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# The labels the ServiceMonitor's scrape gives every series in a cluster; prometheus-adapter maps them to
# the pod and namespace the HPA asks about.
POD_LABELS = {"namespace": "default", "pod": "distilbert-serve-0"}


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip(f"{name} is not installed (make test installs it)")
    return found


def render(folder: Path) -> list[dict]:
    """What ``kubectl apply -k FOLDER`` would apply: ``kubectl kustomize`` (kustomize 5), parsed. Fails, not skips,
    without kubectl: ``make system-deps`` (part of ``make test``) installs it."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed: `make system-deps` installs it (Debian: apt-get install kubectl)")
    out = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"kubectl kustomize {folder}: {out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ok(url: str, timeout: float = 60) -> float:
    """Seconds until ``url`` answers 200."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered 200 in {timeout} s")


@dataclass
class Scraped:
    prometheus: str  # base URL
    load_seconds: float  # how far back the load went

    def query(self, expr: str) -> list[dict]:
        r = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert r["status"] == "success", (expr, r)
        return r["data"]["result"]

    def series(self, match: str) -> list[dict]:
        r = httpx.get(f"{self.prometheus}/api/v1/series", params={"match[]": match}, timeout=10).json()
        assert r["status"] == "success", (match, r)
        return r["data"]


@contextmanager
def scraped_under_load(tmp: Path) -> Iterator[Scraped]:
    """A service on tiny checkpoints, Prometheus scraping it every second with the shipped config
    (plus the pod labels a cluster adds), 8 s of mixed load, then the last scrapes."""
    prometheus = tool("prometheus")
    from tests.fixtures import tiny_pair

    ckpts = tiny_pair(tmp / "models")
    api_port, prom_port = free_port(), free_port()
    models = [{"name": "student", "path": str(ckpts["student"]), "role": "student"},
              {"name": "teacher", "path": str(ckpts["teacher"]), "role": "teacher"}]
    env = {**os.environ, "DISTIL_MODELS": json.dumps(models), "DISTIL_DEVICE": "cpu", "DISTIL_MAX_QUEUE_SIZE": "4",
           "DISTIL_MAX_CLIENT_BATCH_SIZE": "4", "DISTIL_MAX_BATCH_SIZE": "2"}
    api = subprocess.Popen([sys.executable, "-m", "app", "--port", str(api_port)], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cfg = yaml.safe_load((ROOT / "docker" / "prometheus" / "prometheus.yml").read_text())
    cfg["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    cfg["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{api_port}"], "labels": POD_LABELS}]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    prom = subprocess.Popen([prometheus, f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base, prom_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{prom_port}"
    try:
        wait_ok(f"{base}/ready")
        wait_ok(f"{prom_url}/-/ready")
        start = time.monotonic()
        stop = start + 8

        def client(model: str, flood: bool) -> None:
            with httpx.Client(base_url=base, timeout=30) as c:
                while time.monotonic() < stop:
                    texts = ["the movie was great and the plot was fine"] * (4 if flood else 1)
                    c.post("/classify", json={"inputs": texts, "model": model})
                    c.post("/embed", json={"inputs": texts, "model": model})

        threads = [threading.Thread(target=client, args=(m, i % 2 == 1)) for m in ("student", "teacher")
                   for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(2.5)  # let the last scrapes land
        yield Scraped(prom_url, time.monotonic() - start)
    finally:
        for p in (api, prom):
            p.terminate()
            p.wait(30)
