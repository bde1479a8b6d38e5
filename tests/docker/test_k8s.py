"""Kubernetes manifests (deploy/k8s): every rendered kustomization against the Kubernetes OpenAPI
schemas offline (the ServiceMonitor against the Prometheus Operator's CRD), probes and scrape paths
against the app's real routes, the graceful-shutdown budget against the service's own settings, and
the autoscaling metric's PromQL against a real Prometheus."""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import torch
import yaml

import model.device
from app.settings import Settings

from .support import POD_LABELS, ROOT, render

K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.32.0"  # the schemas the manifests are checked against (kubernetes-validate's copy)
KUSTOMIZATIONS = sorted(p.parent for p in K8S.rglob("kustomization.yaml"))
SERVICE_OVERLAYS = [K8S / "cpu", K8S / "gpu"]


def crd_model(api_version: str, kind: str):
    """The Prometheus Operator's resources, as models generated from its CRDs (cloudcoil, v0.80)."""
    if api_version == "monitoring.coreos.com/v1":
        from cloudcoil.models.prometheus_operator import v1

        return getattr(v1, kind)
    return None


def dropped(doc, kept, path: str = "") -> list[str]:
    """Keys of ``doc`` that validation did not keep: names the CRD's schema does not have."""
    if isinstance(doc, dict):
        return [f for k, v in doc.items()
                for f in ([f"{path}.{k}"] if k not in kept else dropped(v, kept[k], f"{path}.{k}"))]
    if isinstance(doc, list):
        return [f for i, (d, k) in enumerate(zip(doc, kept, strict=True)) for f in dropped(d, k, f"{path}[{i}]")]
    return []


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, (kind, [d["kind"] for d in docs])
    return found[0]


def app_routes() -> set[tuple[str, str]]:
    """(method, path) of every route the service really serves, from its own app (OpenAPI: the routers
    are included lazily, so app.routes does not list them)."""
    from app.main import create_app

    app = create_app(Settings(models=[{"name": "m", "path": "/nonexistent", "role": "student"}]))
    return {(m.upper(), path) for path, ops in app.openapi()["paths"].items() for m in ops}


def api_container(docs: list[dict]) -> dict:
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "api")


def test_every_manifest_file_is_rendered_by_some_kustomization():
    used: set[Path] = set()
    for folder in KUSTOMIZATIONS:
        spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
        used |= {(folder / r).resolve() for r in spec.get("resources", []) if (folder / r).is_file()}
        used |= {(folder / p["path"]).resolve() for p in spec.get("patches", [])}
    files = {p.resolve() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert files and files <= used, sorted(str(p) for p in files - used)


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: p.relative_to(K8S).as_posix())
def test_rendered_manifests_validate_against_kubernetes_schemas(folder):
    docs = render(folder)
    assert docs
    for doc in docs:
        crd = crd_model(doc["apiVersion"], doc["kind"])
        if crd is None:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)  # raises with the offending field
        else:
            kept = crd.model_validate(doc).model_dump(mode="json", by_alias=True, exclude_unset=True)
            assert not dropped(doc, kept), dropped(doc, kept)


@pytest.mark.parametrize("folder", SERVICE_OVERLAYS, ids=lambda p: p.name)
def test_probes_and_scrape_path_are_real_routes(folder):
    docs, routes = render(folder), app_routes()
    c = api_container(docs)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    probes = {k: c[k]["httpGet"] for k in ("startupProbe", "readinessProbe", "livenessProbe")}
    for kind, get in probes.items():
        assert ("GET", get["path"]) in routes, (kind, get["path"])
        assert get["port"] in ports, (kind, get["port"])
    assert probes["readinessProbe"]["path"] == "/ready" and probes["livenessProbe"]["path"] == "/health"
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    assert int(env["DISTIL_PORT"]) == ports["http"]
    # The probes go to the ops port, which a flood of connections to the API port cannot fill.
    assert int(env["DISTIL_OPS_PORT"]) == ports["ops"] and {g["port"] for g in probes.values()} == {"ops"}
    # The Service and the ServiceMonitor reach the pods through those named ports, /metrics through ops.
    service, monitor = one(docs, "Service"), one(docs, "ServiceMonitor")
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"http", "ops"}
    assert {ep["port"] for ep in monitor["spec"]["endpoints"]} == {"ops"}
    assert service["spec"]["selector"] == one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    for ep in monitor["spec"]["endpoints"]:
        assert ep["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert ("GET", ep["path"]) in routes


@pytest.mark.parametrize("folder", SERVICE_OVERLAYS, ids=lambda p: p.name)
def test_environment_is_real_settings_and_termination_outlasts_the_drain(folder, monkeypatch):
    docs = render(folder)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    c = api_container(docs)
    # A value from a Secret (the API key) stands in as a placeholder: the pod's other values are what is checked.
    env = {e["name"]: e.get("value", "from-a-secret") for e in c["env"]}
    for name in env:
        assert name.startswith("DISTIL_") and name[7:].lower() in Settings.model_fields, name
        monkeypatch.setenv(name, env[name])
    # The GPU pod's device is the node's, not this machine's: its name is validated, not looked for here.
    monkeypatch.setattr(model.device, "resolve_device", lambda name, local_rank=None: torch.device(name))
    settings = Settings()  # the pod's values, validated by the service's own settings class
    assert settings.device in ("cpu", "cuda")
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # SIGTERM comes after preStop; the service then drains for up to graceful_timeout_s.
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + settings.graceful_timeout_s
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True and "/tmp" in mounts
    for spec in settings.models:
        assert spec.path.parent == Path("/models"), spec.path


@pytest.mark.parametrize("folder", SERVICE_OVERLAYS, ids=lambda p: p.name)
def test_api_key_comes_from_a_secret_the_manifests_do_not_ship(folder):
    docs = render(folder)
    (key,) = [e for e in api_container(docs)["env"] if e["name"] == "DISTIL_API_KEY"]
    assert "value" not in key, "an API key written into the manifest"
    ref = key["valueFrom"]["secretKeyRef"]
    assert ref["name"] and ref["key"] and not ref.get("optional", False)  # no Secret, no pod: never keyless
    assert not [d for d in docs if d["kind"] == "Secret"], "a key committed with the manifests"
    readme = (ROOT / "docs" / "hardening.md").read_text()  # "Secure by default"
    assert f"kubectl create secret generic {ref['name']} --from-literal={ref['key']}=" in readme


def admits(rule: dict, port: str | int) -> bool:
    """A NetworkPolicy ingress rule admits this (named) port: it lists it, or lists none."""
    return "ports" not in rule or any(p.get("port") == port for p in rule["ports"])


@pytest.mark.parametrize("folder", SERVICE_OVERLAYS, ids=lambda p: p.name)
def test_network_policy_admits_only_the_gateway_and_prometheus(folder):
    docs = render(folder)
    policy, deployment = one(docs, "NetworkPolicy"), one(docs, "Deployment")
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == deployment["spec"]["template"]["metadata"]["labels"]
    assert "Ingress" in spec["policyTypes"]
    rules = spec["ingress"]
    for rule in rules:  # every peer named by namespace and pod labels: no empty selector, no address block
        for peer in rule["from"]:
            assert set(peer) == {"namespaceSelector", "podSelector"}, peer
            assert peer["namespaceSelector"]["matchLabels"] and peer["podSelector"]["matchLabels"], peer
    apps = [{p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in r["from"]} for r in rules]
    assert apps == [{"ingress-nginx"}, {"prometheus"}], apps
    gateway, prometheus = rules
    container_ports = {p["name"] for p in api_container(docs)["ports"]}
    assert gateway["ports"] and {p["port"] for p in gateway["ports"]} <= container_ports
    # Prometheus reaches every port the ServiceMonitor scrapes (through the Service's target ports).
    service, monitor = one(docs, "Service"), one(docs, "ServiceMonitor")
    targets = {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}
    for ep in monitor["spec"]["endpoints"]:
        assert admits(prometheus, targets[ep["port"]]), ep


def test_distillation_job_runs_as_locked_down_as_the_service():
    deployment = one(render(K8S / "base"), "Deployment")["spec"]["template"]["spec"]
    job = one(render(K8S / "distill"), "Job")["spec"]["template"]["spec"]
    assert job["securityContext"] == deployment["securityContext"]
    assert job["automountServiceAccountToken"] is False
    (c,) = job["containers"]
    assert c["securityContext"] == api_container([one(render(K8S / "base"), "Deployment")])["securityContext"]
    # The root filesystem is read-only: temp files go to a volume.
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in job["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_gpu_overlay_asks_for_one_gpu_and_cpu_overlay_for_none():
    gpu = api_container(render(K8S / "gpu"))["resources"]
    cpu = api_container(render(K8S / "cpu"))["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == 1 and gpu["requests"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in {**cpu.get("limits", {}), **cpu.get("requests", {})}
    assert api_container(render(K8S / "gpu"))["image"].endswith(":cuda")
    assert api_container(render(K8S / "cpu"))["image"].endswith(":cpu")


def test_distillation_job_resumes_from_its_checkpoint_volume():
    from training.__main__ import COMMANDS
    from training.config import load_config

    docs = render(K8S / "distill")
    job = one(docs, "Job")
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"][:1] == ["torchrun"] and c["command"][-3:] == ["-m", "training", "distill"]
    # The arguments are options of the training command, parsed as it parses them (unknown ones raise).
    cfg = load_config(COMMANDS["distill"][0], None, c["args"])
    assert cfg.train.resume is True
    nproc = int(next(a for a in c["command"] if a.startswith("--nproc_per_node=")).split("=")[1])
    assert c["resources"]["limits"]["nvidia.com/gpu"] == nproc
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    out_volume = next(v for path, v in mounts.items() if cfg.train.out_dir.startswith(path + "/"))
    claim = next(v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if v["name"] == out_volume)
    assert claim in {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    # The paper's effective batch: GPUs x per-GPU batch x accumulation = 4,096 sequences per step.
    assert nproc * cfg.train.batch_size * cfg.train.grad_accum == 4096


def adapter_rules() -> list[dict]:
    cm = one(render(K8S / "prometheus-adapter"), "ConfigMap")
    return yaml.safe_load(cm["data"]["config.yaml"])["rules"]


def test_hpa_metric_is_one_the_adapter_exposes():
    hpa = one(render(K8S / "base"), "HorizontalPodAutoscaler")
    exposed = {r["name"]["as"] for r in adapter_rules()}
    for m in hpa["spec"]["metrics"]:
        assert m["type"] == "Pods" and m["pods"]["metric"]["name"] in exposed
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(render(K8S / "base"), "Deployment")["metadata"]["name"]


def promql(rule: dict) -> str:
    """The query prometheus-adapter sends for one pod of the HPA's namespace (its Go template, filled)."""
    series = re.match(r"^(\w+)", rule["seriesQuery"]).group(1)
    matchers = f'namespace="{POD_LABELS["namespace"]}",pod=~"{POD_LABELS["pod"]}"'
    return (rule["metricsQuery"].replace("<<.Series>>", series).replace("<<.LabelMatchers>>", matchers)
            .replace("<<.GroupBy>>", "pod"))


@pytest.mark.slow
def test_adapter_rules_run_against_real_prometheus(scraped):
    for rule in adapter_rules():
        assert scraped.series(rule["seriesQuery"]), rule["seriesQuery"]
        query = promql(rule)
        (sample,) = scraped.query(query)  # one series: this pod
        assert sample["metric"] == {"pod": POD_LABELS["pod"]}
        assert float(sample["value"][1]) >= 0
        if "in_flight" in query:  # the HPA's metric moved under the load
            window = int(scraped.load_seconds) + 1
            (peak,) = scraped.query(f"max_over_time(({query})[{window}s:1s])")
            assert float(peak["value"][1]) > 0, peak
