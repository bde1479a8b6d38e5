"""The service image, built and run for real (``make test-image``; skipped by ``make test``).

One container serves tiny random checkpoints and the real all-MiniLM-L6-v2 from the asset cache,
mounted read-only, on a read-only root filesystem; its answers are compared with the same
checkpoints served on the host. A second container is stopped with SIGTERM while 16 accepted
requests are in flight. The compose file's ``api`` service is brought up with podman-compose (or
docker compose), and the Kubernetes distillation Job's command is killed and resumed in the image.
Size and start-up times go to the results file named by DISTIL_IMAGE_RESULTS.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from app.settings import Settings
from deploy import image as img
from tests.fixtures import tiny_pair

from .support import ROOT, free_port, wait_ok

pytestmark = [pytest.mark.image, pytest.mark.slow]
SIZE_TARGET = 1.2e9  # bytes, the CPU image
TEXTS = ["the movie was great and the plot was fine", "i hated it", "stocks fell today, but not very much",
         "a kitten and a dog"]
# Inputs that keep MiniLM busy for a few seconds when 16 requests of them are in flight at once (about
# 4,500 tokens; far from the service's 30 s request timeout even on a shared 2-core machine).
# About 16 x 110 tokens per request: on a quiet 2-core machine 16 such requests take a few seconds, long enough
# for all of them to be in flight at once (8 x 30 tokens finished before the 16th arrived), and still drain
# well inside the grace period on a loaded one.
LONG = [" ".join(["the actors were really good but the story was not"] * 11) + f" {i}" for i in range(16)]
# What the engine itself creates in every container: mount points and the files it writes into /etc.
ENGINE_PATHS = {"/etc", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/run", "/models", "/tmp"}
RESULTS: dict = {}


@pytest.fixture(scope="module")
def engine() -> str:
    eng = img.engine()
    if eng is None:
        pytest.fail("no container engine runs here (make container-engine installs podman)")
    return eng


@pytest.fixture(scope="module")
def image(engine) -> str:
    """Builds the image as `make image` does (a no-op when `make test-image` has just built it)."""
    img.build(engine)
    RESULTS["size_bytes"] = img.image_size(engine, img.IMAGE)
    RESULTS["base_image"] = json.loads(img.BASE_RECORD.read_text())  # by ID and digest, as the build recorded it
    return img.IMAGE


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Checkpoints in one folder, readable by the container's uid (pytest's folders are 0700)."""
    root = tmp_path_factory.mktemp("image") / "models"
    ckpts = tiny_pair(root)
    minilm = Path(os.environ.get("DISTIL_CACHE") or Path.home() / ".cache" / "distilbert-serve") / "minilm"
    assert (minilm / "config.json").is_file(), f"{minilm} missing: make assets fetches it"
    subprocess.run(["cp", "-r", str(minilm), str(root / "minilm")], check=True)
    subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
    return {**ckpts, "minilm": root / "minilm"}


def model_list(models: dict[str, Path], root: Path) -> str:
    roles = {"student": "student", "teacher": "teacher"}
    return json.dumps([{"name": n, "path": str(root / p.name), "role": roles.get(n, "other")}
                       for n, p in models.items()])


class Container:
    def __init__(self, engine: str, name: str, port: int, started: float) -> None:
        self.engine, self.name, self.port, self.started = engine, name, port, started
        self.url = f"http://127.0.0.1:{port}"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([self.engine, *args], capture_output=True, text=True, check=check, timeout=120)

    def logs(self) -> str:
        r = self.run("logs", self.name, check=False)
        return (r.stdout + r.stderr)[-4000:]

    def remove(self) -> None:
        self.run("rm", "-f", "-t", "0", self.name, check=False)


def start(engine: str, image: str, models: dict[str, Path], name: str, *extra: str) -> Container:
    port = free_port()
    root = next(iter(models.values())).parent
    subprocess.run([engine, "rm", "-f", name], capture_output=True)
    t0 = time.monotonic()
    subprocess.run([engine, "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000",
                    "-v", f"{root}:/models:ro", "-e", f"DISTIL_MODELS={model_list(models, Path('/models'))}",
                    "-e", "DISTIL_DEVICE=cpu", *extra, image], check=True, capture_output=True, timeout=120)
    return Container(engine, name, port, t0)


@pytest.fixture(scope="module")
def served(engine, image, models):
    """The image on a read-only root filesystem (temp folders are tmpfs), as the Kubernetes pods run it."""
    c = start(engine, image, models, f"distil-test-image-{os.getpid()}", "--read-only", "--tmpfs", "/tmp")
    try:
        wait_ok(f"{c.url}/ready", timeout=300)
        RESULTS["cold_start_seconds"] = round(time.monotonic() - c.started, 2)  # from `run` to ready
        RESULTS["cold_start_models"] = sorted(models)
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.remove()


@pytest.fixture(scope="module")
def host(models, tmp_path_factory):
    """The same checkpoints served on the host by the same code."""
    port = free_port()
    env = {**os.environ, "DISTIL_MODELS": model_list(models, next(iter(models.values())).parent),
           "DISTIL_DEVICE": "cpu"}
    log = (tmp_path_factory.mktemp("host") / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "app", "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        # The same start on the host, for comparison (the machine's load moves both).
        RESULTS["host_cold_start_seconds"] = round(wait_ok(f"http://127.0.0.1:{port}/ready", timeout=300), 2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(60)


def test_runs_as_uid_10001(served):
    status = served.run("exec", served.name, "cat", "/proc/1/status").stdout
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert set(uids) == {"10001"}, status


def test_healthcheck_passes(served):
    hc = json.loads(served.run("inspect", "--format", "{{json .Config.Healthcheck}}", served.name).stdout)
    assert "/health" in " ".join(hc["Test"])  # kept in the image (docker format)
    r = served.run("healthcheck", "run", served.name, check=False) if served.engine == "podman" else \
        served.run("exec", served.name, *hc["Test"][1:], check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_kubernetes_pod_spec_fits_the_image(served):
    """The Deployment's user is the image's, and its preStop command exists in the image."""
    from .support import render

    deployment = next(d for d in render(ROOT / "deploy" / "k8s" / "cpu") if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    user = served.run("inspect", "--format", "{{.Config.User}}", served.name).stdout.strip()
    assert user == f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    (c,) = pod["containers"]
    r = served.run("exec", served.name, *c["lifecycle"]["preStop"]["exec"]["command"], check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def _close(a, b, path: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert abs(a - b) <= 1e-5, (path, a, b)
    else:
        assert a == b, (path, a, b)


@pytest.mark.parametrize("endpoint,body", [
    ("/classify", {"inputs": TEXTS, "model": "student"}),
    ("/classify", {"inputs": TEXTS, "model": "teacher", "raw_scores": True}),
    ("/embed", {"inputs": TEXTS, "model": "embedder"}),
    ("/embed", {"inputs": TEXTS, "model": "minilm"}),
    ("/v1/embeddings", {"input": TEXTS, "model": "minilm"}),
])
def test_same_numbers_as_the_host(served, host, endpoint, body):
    inside = httpx.post(served.url + endpoint, json=body, timeout=60)
    outside = httpx.post(host + endpoint, json=body, timeout=60)
    assert inside.status_code == outside.status_code == 200, (inside.text, outside.text)
    a, b = inside.json(), outside.json()
    assert a.get("predictions") or a.get("embeddings") or a.get("data")
    _close(a, b, endpoint)


def test_image_size_within_target(image, engine):
    assert RESULTS["size_bytes"] <= SIZE_TARGET, f"{RESULTS['size_bytes'] / 1e6:.0f} MB"


def _in_flight(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("distil_in_flight_requests{"))


def test_sigterm_under_load_answers_every_accepted_request(engine, image, models):
    """16 requests in flight (the service's own gauge says so), then SIGTERM: every one answered, exit 0
    within the grace period, and nothing written outside the model and temp folders."""
    grace = Settings.model_fields["graceful_timeout_s"].default
    c = start(engine, image, models, f"distil-test-sigterm-{os.getpid()}", "--tmpfs", "/tmp")
    try:
        wait_ok(f"{c.url}/ready", timeout=300)
        RESULTS["second_start_seconds"] = round(time.monotonic() - c.started, 2)  # the image's files now cached
        answers: list[int | str] = []

        def call() -> None:
            try:
                r = httpx.post(f"{c.url}/embed", json={"inputs": LONG, "model": "minilm"}, timeout=120)
                complete = r.status_code != 200 or len(r.json()["embeddings"]) == len(LONG)
                answers.append(r.status_code if complete else -1)
            except httpx.HTTPError as e:
                answers.append(repr(e))

        threads = [threading.Thread(target=call) for _ in range(16)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while (n := _in_flight(c.url)) < 16 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert n >= 16, f"only {n} requests in flight"
        signalled = time.monotonic()
        c.run("kill", "--signal", "TERM", c.name)
        code = int(c.run("wait", c.name).stdout.strip())
        drained = time.monotonic() - signalled
        for t in threads:
            t.join(30)
        RESULTS["sigterm"] = {"in_flight": int(n), "answered_200": answers.count(200), "exit_code": code,
                              "drain_seconds": round(drained, 2), "grace_seconds": grace}
        assert answers == [200] * 16, answers
        assert code == 0, c.logs()
        assert drained < grace
        changed = [line.split(maxsplit=1)[1] for line in c.run("diff", c.name).stdout.splitlines() if line.strip()]
        written = [p for p in changed if p not in ENGINE_PATHS and not p.startswith(("/tmp/", "/run/"))]
        RESULTS["written_outside_models_and_tmp"] = written
        assert not written, written
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.remove()


def test_distillation_job_resumes_in_the_image(engine, image, tmp_path):
    """The Job's command and arguments (deploy/k8s/distill) in the image, as its user: one CPU process
    instead of 8 GPUs, a tiny teacher and corpus at the paths the Job reads. Killed after its first
    checkpoint (a preemption), the same command resumes from the checkpoint volume and finishes."""
    import random

    from tests.fixtures import WORDS, write_tiny

    from .support import render

    job = next(d for d in render(ROOT / "deploy" / "k8s" / "distill") if d["kind"] == "Job")
    (c,) = job["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    args = dict(a.split("=", 1) for a in c["args"])
    volumes = {"data": tmp_path / "data", "checkpoints": tmp_path / "checkpoints"}
    teacher = volumes["data"] / Path(args["teacher"]).relative_to(mounts["data"])
    write_tiny(teacher, "bert", "mlm", seed=1, layers=2, max_pos=64)
    rng = random.Random(0)
    (volumes["data"] / Path(args["corpus"]).relative_to(mounts["data"])).write_text(
        "\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 40))) for _ in range(200)) + "\n")
    volumes["checkpoints"].mkdir()
    subprocess.run(["chmod", "-R", "a+rwX", str(tmp_path)], check=True)  # the pod's fsGroup does this
    out = volumes["checkpoints"] / Path(args["train.out_dir"]).relative_to(mounts["checkpoints"])
    command = ["--nproc_per_node=1" if a.startswith("--nproc_per_node=") else a for a in c["command"]]
    # Enough steps that the kill lands mid-run on a quiet machine too (a tiny step takes milliseconds: with
    # 6 steps the run had finished before the kill arrived).
    steps = 400
    small = ["max_length=32", "train.batch_size=8", "train.grad_accum=1", f"train.max_steps={steps}",
             "train.save_every=10", "train.device=cpu", "train.progress=false"]
    name = f"distil-test-job-{os.getpid()}"
    # As locked down as the Job's securityContext: read-only root (temp files on the /tmp volume), no capability.
    assert c["securityContext"]["readOnlyRootFilesystem"] and c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    locked = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    run = [engine, "run", "--name", name, *locked,
           *(a for n, p in volumes.items() for a in ("-v", f"{p}:{mounts[n]}")), image, *command, *c["args"], *small]
    subprocess.run([engine, "rm", "-f", name], capture_output=True)
    first = subprocess.Popen(run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not (out / "checkpoint.pt").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        subprocess.run([engine, "kill", name], capture_output=True)  # SIGKILL: no chance to clean up
        first.wait(60)
        assert (out / "checkpoint.pt").exists() and not (out / "final").exists(), "not killed mid-run"
        subprocess.run([engine, "rm", "-f", name], capture_output=True)
        second = subprocess.run(run, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    finally:
        subprocess.run([engine, "rm", "-f", name], capture_output=True)
    log = (out / "train.log").read_text()
    resumed = [int(line.rsplit(" ", 1)[1]) for line in log.splitlines() if "resumed from" in line]
    assert resumed and 0 < resumed[-1] < steps, log[-2000:]
    assert (out / "final").is_dir() and f"done at step {steps}" in log
    RESULTS["job_resumed_at_step"] = resumed[-1]


def compose_command(engine: str) -> list[str]:
    if engine == "podman":
        return [str(Path(sys.executable).parent / "podman-compose")]
    return ["docker", "compose"]


def test_compose_api_service_ready_through_published_port(engine, image, models, tmp_path):
    """As the README says to run it: the key in an env file, Grafana's password in the environment; the API
    container read-only, without capabilities, answering only with the key."""
    port, project = free_port(), f"distiltest{os.getpid()}"
    cmd = [*compose_command(engine), "-p", project, "-f", str(ROOT / "docker-compose.yml")]
    key = "compose-test-key"
    (tmp_path / "api.env").write_text(f"DISTIL_API_KEY={key}\n")
    env = {**os.environ, "MODELS_DIR": str(models["student"].parent), "API_PORT": str(port),
           "API_ENV_FILE": str(tmp_path / "api.env"), "GRAFANA_ADMIN_PASSWORD": "compose-test-password"}
    up = subprocess.run([*cmd, "up", "-d", "api"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        RESULTS["compose_ready_seconds"] = round(wait_ok(f"http://127.0.0.1:{port}/ready", timeout=300), 2)
        url = f"http://127.0.0.1:{port}/classify"
        assert httpx.post(url, json={"inputs": TEXTS}, timeout=30).status_code == 401
        r = httpx.post(url, json={"inputs": TEXTS}, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert r.status_code == 200 and len(r.json()["predictions"]) == len(TEXTS)
        (api,) = subprocess.run([engine, "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                                 "--filter", "label=com.docker.compose.service=api"],
                                capture_output=True, text=True).stdout.split()
        (c,) = json.loads(subprocess.run([engine, "inspect", api], capture_output=True, text=True).stdout)
        assert c["HostConfig"]["ReadonlyRootfs"] is True, c["HostConfig"]
        assert any("no-new-privileges" in o for o in c["HostConfig"]["SecurityOpt"]), c["HostConfig"]["SecurityOpt"]
        if engine == "podman":  # the capabilities the process really has: none
            assert not c["EffectiveCaps"], c["EffectiveCaps"]
    finally:
        subprocess.run([*cmd, "down", "-t", "5"], cwd=ROOT, env=env, capture_output=True, timeout=300)


def test_write_results(engine, image, request):
    """Last: the numbers above, with where and how they were measured (the README line is generated
    from this file by deploy.report). Nothing is written when a check above failed."""
    assert request.session.testsfailed == 0, "a check above failed: no results written"
    out = os.environ.get("DISTIL_IMAGE_RESULTS")
    needed = {"size_bytes", "cold_start_seconds", "host_cold_start_seconds", "second_start_seconds", "sigterm",
              "compose_ready_seconds", "job_resumed_at_step"}
    assert needed <= RESULTS.keys(), f"missing: {needed - RESULTS.keys()}"
    version = subprocess.run([engine, "--version"], capture_output=True, text=True).stdout.strip()
    data = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "command": "make test-image",
            "engine": version, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "image": image, "size_target_bytes": SIZE_TARGET, **RESULTS}
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(data, indent=2) + "\n")
