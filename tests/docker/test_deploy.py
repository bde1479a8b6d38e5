"""Deployment files: hadolint, promtool, compose and dashboard checks, and every dashboard
query run against a real Prometheus scraping a real service under load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .support import ROOT, tool

DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "distilbert.json"
REQUIRED_PANELS = ["Latency p50 / p95 / p99", "speed-up", "Throughput", "batch size", "Padding ratio",
                   "Queue depth", "Rejected requests", "Error rate"]


def queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


def test_hadolint_has_nothing_above_info():
    r = subprocess.run([tool("hadolint"), "--failure-threshold", "warning", "docker/Dockerfile"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_accepts_the_prometheus_config():
    r = subprocess.run([tool("promtool"), "check", "config", "docker/prometheus/prometheus.yml"], cwd=ROOT,
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
    # docker stop waits this long before SIGKILL: longer than the service's own drain.
    from app.settings import Settings

    for name in ("api", "api-gpu"):
        grace = services[name]["stop_grace_period"]
        assert grace.endswith("s") and float(grace[:-1]) > Settings.model_fields["graceful_timeout_s"].default, name
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


@pytest.mark.slow
def test_every_dashboard_query_against_real_prometheus(scraped):
    results = {(title, expr): scraped.query(expr) for title, expr in queries()}
    for (title, expr), series in results.items():
        assert series, f"no series for {title}: {expr}"
        if "speed-up" in title:
            assert all(float(s["value"][1]) > 0 for s in series), (title, series)
            continue
        roles = {s["metric"].get("role") for s in series}
        assert {"teacher", "student"} <= roles, (title, expr, roles)
