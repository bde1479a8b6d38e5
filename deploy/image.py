"""Build the service image with whichever container engine works here.

    python -m deploy.image engine        # prints podman or docker; exits 1 if neither runs
    python -m deploy.image base          # the base image: the default if pullable, else mmdebstrap's
    python -m deploy.image build         # base + the CPU image (docker/Dockerfile)

Each build records the base it was built on, by image ID and digest, in deploy/results/base.json (the
mmdebstrap base is made here, so no registry vouches for it: its ID is what identifies it later).

Podman is preferred: it runs as root without a daemon. Where no image registry can be reached,
the base is a Debian bookworm root filesystem made with mmdebstrap and imported, built once and
then reused. Inside a podman build the package index is reached the way the host reaches it: the
host's effective pip configuration is written to one pip.conf and mounted read-only with every file
and folder it names (CA bundle, constraints, local wheel folders), and torch comes from that index.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "distilbert-serve:cpu"
DEFAULT_BASE = "docker.io/library/python:3.11-slim-bookworm"  # the Dockerfile's PYTHON_IMAGE default
LOCAL_BASE = "localhost/distilbert-serve-base:bookworm"
BASE_RECORD = ROOT / "deploy" / "results" / "base.json"
# python3-venv for the virtual environment, passwd for useradd: the two things the Dockerfile needs
# beyond Debian's minimal base.
DEBIAN_PACKAGES = "python3,python3-venv,passwd"
# Documentation, manual pages and translations are not installed (about 50 MB), as in Docker's slim images.
DPKG_EXCLUDES = ["path-exclude=/usr/share/doc/*", "path-include=/usr/share/doc/*/copyright",
                 "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/locale/*", "path-exclude=/usr/share/info/*"]


def _ok(cmd: list[str], timeout: float = 60) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def engine() -> str | None:
    """podman if it runs, else docker if its daemon answers (a docker client alone is not enough)."""
    for name in ("podman", "docker"):
        if shutil.which(name) and _ok([name, "info"]):
            return name
    return None


def image_exists(eng: str, ref: str) -> bool:
    return _ok([eng, "image", "inspect", ref])


def image_size(eng: str, ref: str) -> int:
    out = subprocess.run([eng, "image", "inspect", "--format", "{{.Size}}", ref], capture_output=True, text=True,
                         check=True).stdout
    return int(out.strip())


def pip_settings(python: str = sys.executable) -> dict[str, str]:
    """The host's effective pip settings (files, then PIP_* environment, which pip lets win)."""
    out = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True).stdout
    files: dict[str, str] = {}
    env: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        scope, _, name = key.partition(".")
        value = value.strip().strip("'\"")
        if name and value:
            (env if scope == ":env:" else files)[name] = value
    return {**files, **env}


def host_paths(settings: dict[str, str]) -> list[Path]:
    """Existing local files and folders the settings name (paths and file:// URLs), outermost only."""
    found: set[Path] = set()
    for value in settings.values():
        for token in value.split():
            path = Path(token.removeprefix("file://"))
            if token.startswith("file://") and path.name == "simple":
                path = path.parent  # a simple index's pages link to ../../files/...
            if path.is_absolute() and path.exists():
                found.add(path)
    # /opt/pypi/simple is inside /opt/pypi: mounting both would be redundant.
    return sorted(p for p in found if not any(q != p and q in p.parents for q in found))


def pip_mounts(workdir: Path) -> list[str]:
    """``-v`` arguments that give a build the host's pip configuration and what it names."""
    settings = pip_settings()
    conf = workdir / "pip.conf"
    conf.write_text("[global]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(settings.items())))
    mounts = [f"{conf}:/etc/pip.conf:ro"]
    return [*mounts, *(f"{p}:{p}:ro" for p in host_paths(settings))]


def debian_base(eng: str, suite: str = "bookworm") -> None:
    """A Debian root filesystem from mmdebstrap, imported as LOCAL_BASE (about 2 minutes)."""
    if not shutil.which("mmdebstrap"):
        raise SystemExit("mmdebstrap is not installed (make container-engine installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        tar = Path(tmp) / "rootfs.tar"
        excludes = [f"--dpkgopt={opt}" for opt in DPKG_EXCLUDES]
        subprocess.run(["mmdebstrap", "--variant=minbase", f"--include={DEBIAN_PACKAGES}", *excludes,
                        "--format=tar", suite, str(tar)], check=True)
        subprocess.run([eng, "import", str(tar), LOCAL_BASE], check=True)


def base(eng: str) -> str:
    """The image to build on: one already here, else the default pulled, else a local Debian one."""
    for ref in (LOCAL_BASE, DEFAULT_BASE):
        if image_exists(eng, ref):
            return ref
    if _ok([eng, "pull", DEFAULT_BASE], timeout=120):
        return DEFAULT_BASE
    print(f"{DEFAULT_BASE} cannot be pulled; building {LOCAL_BASE} with mmdebstrap", flush=True)
    debian_base(eng)
    return LOCAL_BASE


def base_record(eng: str, ref: str) -> dict:
    """What identifies a base image: its ID and digest as the engine reports them (content addresses)."""
    out = subprocess.run([eng, "image", "inspect", ref], capture_output=True, text=True, check=True).stdout
    (info,) = json.loads(out)
    return {"ref": ref, "id": info["Id"], "digest": info.get("Digest"), "repo_digests": info.get("RepoDigests") or [],
            "created": info.get("Created"), "recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            **({"made_by": f"mmdebstrap --variant=minbase bookworm, with {DEBIAN_PACKAGES}"} if ref == LOCAL_BASE
               else {})}


def build(eng: str, tag: str = IMAGE, base_image: str | None = None, record: Path | None = BASE_RECORD) -> float:
    """Build docker/Dockerfile as ``tag`` (its base's ID and digest written to ``record``); returns the seconds
    it took."""
    base_image = base_image or base(eng)
    if record is not None:
        found = base_record(eng, base_image)
        old = json.loads(record.read_text()) if record.is_file() else {}
        if [old.get(k) for k in ("ref", "id", "digest")] != [found[k] for k in ("ref", "id", "digest")]:
            record.parent.mkdir(parents=True, exist_ok=True)  # a new base: recorded (the same one is left as is)
            record.write_text(json.dumps(found, indent=2) + "\n")
    cmd = [eng, "build", "-f", "docker/Dockerfile", "-t", tag, "--build-arg", f"PYTHON_IMAGE={base_image}"]
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        if eng == "podman":
            # docker format keeps HEALTHCHECK (OCI has no field for it); torch from the host's index.
            cmd += ["--format", "docker", "--build-arg", "TORCH_INDEX_URL="]
            for mount in pip_mounts(Path(tmp)):
                cmd += ["-v", mount]
        subprocess.run([*cmd, "."], cwd=ROOT, check=True)
    return time.monotonic() - start


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["engine", "base", "build"])
    p.add_argument("--tag", default=IMAGE)
    args = p.parse_args(argv)
    eng = engine()
    if eng is None:
        raise SystemExit("no container engine runs here: neither `podman info` nor `docker info` succeeds "
                         "(make container-engine installs podman on Debian)")
    if args.command == "engine":
        print(eng)
    elif args.command == "base":
        print(base(eng))
    else:
        seconds = build(eng, args.tag)
        print(f"built {args.tag} with {eng} in {seconds:.0f} s, {image_size(eng, args.tag) / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
