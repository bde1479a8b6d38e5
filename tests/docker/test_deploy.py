"""Deployment files: hadolint, promtool, compose and dashboard checks, and every dashboard
query run against a real Prometheus scraping a real service under load."""

from __future__ import annotations

import json
import re
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


def dockerfile_instructions() -> list[str]:
    """docker/Dockerfile's instructions, continuation lines joined, comments dropped."""
    lines = [ln for ln in (ROOT / "docker" / "Dockerfile").read_text().splitlines() if not ln.lstrip().startswith("#")]
    return [" ".join(i.split()) for i in "\n".join(lines).replace("\\\n", " ").split("\n") if i.strip()]


@pytest.mark.parametrize("variant, index", [("cpu", "https://download.pytorch.org/whl/cpu"),
                                            ("cuda", "https://download.pytorch.org/whl/cu130")])
def test_torch_variant_picks_the_torch_index(tmp_path, variant, index):
    """The deps stage's torch step, run as the build runs it with a pip that only records its arguments:
    TORCH_VARIANT (what compose passes: cuda for distilbert-serve:cuda) picks the wheel index, nothing is downloaded."""
    steps = dockerfile_instructions()
    start = next(i for i, s in enumerate(steps) if s.endswith(" AS deps"))
    deps = steps[start:next(i for i, s in enumerate(steps) if i > start and s.startswith("FROM "))]
    args = dict(s.removeprefix("ARG ").split("=", 1) for s in deps if s.startswith("ARG ") and "=" in s)
    (run,) = [s for s in deps if s.startswith("RUN ") and "torch-index.sh" in s]
    script = run.removeprefix("RUN ").replace("/tmp/torch-index.sh", str(ROOT / "docker" / "torch-index.sh"))
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "pip").write_text(f'#!/bin/sh\necho "$*" >> {tmp_path / "calls"}\n')
    (fake / "pip").chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin", "TORCH_VARIANT": variant, "TORCH_INDEX_URL": args["TORCH_INDEX_URL"]}
    r = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == ["install --require-hashes -r /tmp/serve.lock", f"install --index-url {index} torch==2.13.0"]
    assert args["TORCH_VARIANT"] == "cpu"  # the default image is the CPU one
    # compose builds its two images with the variants tested here; an unknown one stops the build.
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert compose["api"]["build"]["args"]["TORCH_VARIANT"] == "cpu"
    assert compose["api-gpu"]["build"]["args"]["TORCH_VARIANT"] == "cuda"
    r = subprocess.run(["sh", "-c", script], env={**env, "TORCH_VARIANT": "rocm"}, capture_output=True, text=True)
    assert r.returncode != 0 and "TORCH_VARIANT must be cpu or cuda" in r.stderr


def test_baked_models_belong_to_root():
    """The service user reads the baked models and cannot change them."""
    copies = [s for s in dockerfile_instructions() if s.startswith("COPY --from=artifacts")]
    assert copies
    for step in copies:
        assert "--chown=root:root" in step and "--chmod=0555" in step, step


def test_compose_is_secure_by_default():
    text = (ROOT / "docker-compose.yml").read_text()
    services = yaml.safe_load(text)["services"]
    for name in ("api", "api-gpu"):
        svc = services[name]
        assert svc["env_file"] == ["${API_ENV_FILE:-api.env}"], name  # the key: required, never in the file
        assert "DISTIL_API_KEY" not in svc.get("environment", {}), name
        assert svc["read_only"] is True and svc["tmpfs"] == ["/tmp"], name
    for name, svc in services.items():
        assert svc["cap_drop"] == ["ALL"] and "no-new-privileges:true" in svc["security_opt"], name
    for name in ("prometheus", "grafana"):
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"]), name
        # Pulled images by digest.
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", services[name]["image"]), name
    password = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", password), password  # required, no default
    assert "admin/admin" not in text
    # The secrets compose reads stay out of git and of the image's build context.
    for ignore in (".gitignore", ".dockerignore"):
        assert {"api.env", ".env"} <= set((ROOT / ignore).read_text().split()), ignore


def locked(f: str) -> dict[str, tuple[str, list[str]]]:
    """requirements/<f>: name -> (version, SHA-256s), from its logical lines (continuations joined)."""
    text = (ROOT / "requirements" / f).read_text().replace("\\\n", " ")
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            pin, *options = line.split()
            name, version = pin.split("==")
            out[name] = (version, [o.removeprefix("--hash=sha256:") for o in options])
    return out


def test_image_and_make_test_share_pins():
    serve, dev = locked("serve.lock"), locked("dev.lock")
    assert serve and all(dev.get(k) == v for k, v in serve.items())


def test_locks_are_hashed_and_installed_with_require_hashes():
    for f in ("serve.lock", "dev.lock"):
        for name, (version, digests) in locked(f).items():
            assert digests and all(re.fullmatch(r"[0-9a-f]{64}", d) for d in digests), (f, name, version)
        assert "torch" not in locked(f)  # pinned on its own (by version: a local wheel here, a CUDA one elsewhere)
    assert {"sympy", "networkx", "jinja2", "filelock"} <= locked("serve.lock").keys()  # torch's, hashed first
    assert "install --require-hashes -r /tmp/serve.lock" in " ".join(dockerfile_instructions())
    make = (ROOT / "Makefile").read_text()
    assert "$(PIP) install -q --require-hashes -r requirements/dev.lock\n\t$(PIP) install -q torch==2.13.0" in make


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


def test_lock_takes_every_files_hash_from_the_configured_indexes(tmp_path, monkeypatch):
    """tools/lock.py on a local index (a PEP 503 page, hashes in the links) and a wheel folder: every file of
    the pinned version, none of another version, one hash per distinct file."""
    import hashlib
    import importlib.util

    spec = importlib.util.spec_from_file_location("lock", ROOT / "tools" / "lock.py")
    lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock)
    page = tmp_path / "simple" / "demo-pkg"
    page.mkdir(parents=True)
    a, b, old = "a" * 64, "b" * 64, "c" * 64
    page.joinpath("index.html").write_text(
        f'<a href="../../files/demo_pkg-1.0-py3-none-any.whl#sha256={a}">demo_pkg-1.0-py3-none-any.whl</a>\n'
        f'<a href="../../files/demo_pkg-1.0.tar.gz#sha256={b}">demo_pkg-1.0.tar.gz</a>\n'
        f'<a href="../../files/demo_pkg-0.9-py3-none-any.whl#sha256={old}">demo_pkg-0.9-py3-none-any.whl</a>\n')
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "demo_pkg-1.0-cp311-cp311-linux_x86_64.whl").write_bytes(b"local build")
    (wheels / "other-1.0-py3-none-any.whl").write_bytes(b"another package")
    monkeypatch.setattr(lock, "pip_config", lambda: {"index-url": f"file://{tmp_path}/simple",
                                                      "find-links": str(wheels)})
    assert lock.hashes({"demo-pkg": "1.0"}) == {"demo-pkg": sorted([a, b, hashlib.sha256(b"local build").hexdigest()])}
    with pytest.raises(SystemExit, match="demo-pkg==2.0: no file"):
        lock.hashes({"demo-pkg": "2.0"})
