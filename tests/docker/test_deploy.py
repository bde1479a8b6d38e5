"""Deployment files: hadolint, promtool, compose and dashboard checks, and every dashboard
query run against a real Prometheus scraping a real service under load."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "distilbert.json"
REQUIRED_PANELS = ["Latency p50 / p95 / p99", "speed-up", "Throughput", "batch size", "Padding ratio",
                   "Queue depth", "Rejected requests", "Error rate"]


def _bin(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip(f"{name} is not installed (make test installs it)")
    return found


def queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


def test_hadolint_has_nothing_above_info():
    r = subprocess.run([_bin("hadolint"), "--failure-threshold", "warning", "docker/Dockerfile"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_accepts_the_prometheus_config():
    r = subprocess.run([_bin("promtool"), "check", "config", "docker/prometheus/prometheus.yml"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0 and "SUCCESS" in r.stdout + r.stderr, r.stdout + r.stderr


def test_dockerfile_contract():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert "AS builder" in text and "AS runtime" in text  # multi-stage
    assert "USER 10001:10001" in text  # non-root
    assert "EXPOSE 8000" in text and "HEALTHCHECK" in text and "/health" in text and "curl" not in text
    assert 'CMD ["distilbert-serve"]' in text
    assert "requirements/serve.lock" in text and "torch==2.13.0" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "artifacts", ".cache"} <= set(ignored)


def test_image_and_make_test_share_pins():
    def pins(f: str) -> dict[str, str]:
        lines = (ROOT / "requirements" / f).read_text().splitlines()
        return dict(ln.split("==") for ln in lines if ln and not ln.startswith("#"))

    serve, dev = pins("serve.lock"), pins("dev.lock")
    assert serve and all(dev.get(k) == v for k, v in serve.items())


def test_console_script_is_the_one_the_image_runs():
    script = Path(sys.executable).parent / "distilbert-serve"
    assert script.is_file()
    r = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--port" in r.stdout


def test_compose_parses_and_references_existing_files():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"api", "api-gpu", "prometheus", "grafana"} <= set(services)
    assert services["api-gpu"]["profiles"] == ["gpu"] and "profiles" not in services["api"]
    dev = services["api-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert dev["driver"] == "nvidia" and "gpu" in dev["capabilities"]
    for name, svc in services.items():
        assert svc.get("healthcheck"), name
        assert svc.get("restart") == "unless-stopped", name
        assert svc["deploy"]["resources"]["limits"]["memory"], name
        build = svc.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file()
        for vol in svc.get("volumes", []):
            if vol.startswith("${MODELS_DIR:-./artifacts}:/models"):
                continue  # the model volume, built by `make models`
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (ROOT / src).exists(), f"{name}: {src} does not exist"
    assert services["prometheus"]["depends_on"]["api"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    prov = ROOT / "docker" / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert ds["type"] == "prometheus" and ds["uid"] == "prometheus"
    assert yaml.safe_load((prov / "dashboards" / "dashboards.yml").read_text())["providers"]


def test_dashboard_is_valid_and_has_every_panel():
    dash = json.loads(DASHBOARD.read_text())
    titles = [p["title"] for p in dash["panels"]]
    for needle in REQUIRED_PANELS:
        assert any(needle.lower() in t.lower() for t in titles), needle
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert p["datasource"]["uid"] == "prometheus" and p["targets"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered 200")


@pytest.mark.slow
def test_every_dashboard_query_against_real_prometheus(tmp_path):
    prometheus = _bin("prometheus")
    from tests.fixtures import tiny_pair

    ckpts = tiny_pair(tmp_path / "models")
    api_port, prom_port = _free_port(), _free_port()
    models = [{"name": "student", "path": str(ckpts["student"]), "role": "student"},
              {"name": "teacher", "path": str(ckpts["teacher"]), "role": "teacher"}]
    env = {**os.environ, "DISTIL_MODELS": json.dumps(models), "DISTIL_DEVICE": "cpu", "DISTIL_MAX_QUEUE_SIZE": "4",
           "DISTIL_MAX_CLIENT_BATCH_SIZE": "4", "DISTIL_MAX_BATCH_SIZE": "2"}
    api = subprocess.Popen([sys.executable, "-m", "app", "--port", str(api_port)], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # The shipped config, pointed at this test's service and scraped every second.
    cfg = yaml.safe_load((ROOT / "docker" / "prometheus" / "prometheus.yml").read_text())
    cfg["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    cfg["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{api_port}"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    prom = subprocess.Popen([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base, prom_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{prom_port}"
    try:
        _wait(f"{base}/ready")
        _wait(f"{prom_url}/-/ready")
        stop = time.monotonic() + 8

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
        results = {}
        for title, expr in queries():
            r = httpx.get(f"{prom_url}/api/v1/query", params={"query": expr}, timeout=10).json()
            assert r["status"] == "success", (title, expr, r)
            results[(title, expr)] = r["data"]["result"]
    finally:
        for p in (api, prom):
            p.terminate()
            p.wait(30)
    for (title, expr), series in results.items():
        assert series, f"no series for {title}: {expr}"
        if "speed-up" in title:
            assert all(float(s["value"][1]) > 0 for s in series), (title, series)
            continue
        roles = {s["metric"].get("role") for s in series}
        assert {"teacher", "student"} <= roles, (title, expr, roles)
