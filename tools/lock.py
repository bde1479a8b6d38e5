"""Write requirements/*.lock from the current environment: exact versions of everything each
extra needs (torch excluded: it is pinned on its own, CPU or CUDA build; what torch needs is locked, so it
is installed, hashed, before torch), each with the SHA-256 of
every file of that version on the indexes pip is configured with (PyPI's simple API, local indexes
and wheel folders), so ``pip install --require-hashes`` accepts only those files on any platform.

    .venv/bin/python tools/lock.py
"""

from __future__ import annotations

import hashlib
import json
import re
import ssl
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from html.parser import HTMLParser
from importlib import metadata
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import InvalidSdistFilename, InvalidWheelFilename, parse_sdist_filename, parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"torch"}
PYPI = "https://pypi.org/simple"


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(reqs: list[str]) -> dict[str, str]:
    env = default_environment()
    seen: dict[str, str] = {}
    todo = [(Requirement(r), ()) for r in reqs]
    while todo:
        req, extras = todo.pop()
        name = canon(req.name)
        key = name + "[" + ",".join(sorted(req.extras)) + "]"
        if key in seen:
            continue
        dist = metadata.distribution(req.name)
        seen[key] = dist.version
        for r in dist.requires or []:
            sub = Requirement(r)
            if sub.marker is None or any(sub.marker.evaluate({**env, "extra": e}) for e in (req.extras or {""})):
                todo.append((sub, ()))
    out: dict[str, str] = {}
    for key, version in seen.items():
        if key.split("[")[0] not in SKIP:  # pinned on its own; what it needs stays locked
            out[key.split("[")[0]] = version
    return out


def pip_config() -> dict[str, str]:
    """pip's effective settings here (files, then PIP_* environment)."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                         check=True).stdout
    found: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        found[key.partition(".")[2]] = value.strip().strip("'\"")
    return found


class _Links(HTMLParser):
    """The file links of a PEP 503 simple page: (file name, URL with its #sha256= fragment)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._href = dict(attrs).get("href") if tag == "a" else None

    def handle_data(self, data: str) -> None:
        if self._href:
            self.links.append((data.strip(), self._href))
            self._href = None


def _version_of(filename: str, name: str) -> Version | None:
    try:
        if filename.endswith(".whl"):
            dist, version, _, _ = parse_wheel_filename(filename)
        else:
            dist, version = parse_sdist_filename(filename)
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None
    return version if canon(dist) == name else None


def index_files(index: str, name: str, context: ssl.SSLContext) -> list[tuple[str, str | None]]:
    """(file name, SHA-256 as the index gives it) of every file of ``name`` on one simple index: PEP 691
    JSON over HTTP, a PEP 503 page (hash in the link's fragment) for a file:// index."""
    url = f"{index.rstrip('/')}/{name}/"
    if url.startswith("file://"):
        page = Path(urlparse(url).path) / "index.html"
        if not page.is_file():
            return []
        parser = _Links()
        parser.feed(page.read_text())
        fragments = [(fn, urldefrag(urljoin(url, href)).fragment) for fn, href in parser.links]
        return [(fn, f.removeprefix("sha256=") if f.startswith("sha256=") else None) for fn, f in fragments]
    req = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(req, timeout=60, context=context) as r:
            data = json.load(r)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return []
        raise
    return [(f["filename"], f["hashes"].get("sha256")) for f in data["files"] if not f.get("yanked")]


def index_hashes(index: str, name: str, version: Version, context: ssl.SSLContext) -> set[str]:
    """SHA-256 of the files of name==version that one simple index lists."""
    return {sha for fn, sha in index_files(index, name, context) if sha and _version_of(fn, name) == version}


def folder_hashes(folder: Path, name: str, version: Version) -> set[str]:
    """SHA-256 of the files of name==version in a find-links folder, computed."""
    return {hashlib.sha256(f.read_bytes()).hexdigest() for f in folder.glob("*")
            if f.is_file() and _version_of(f.name, name) == version}


def hashes(pins: dict[str, str]) -> dict[str, list[str]]:
    """Every file's SHA-256 for each pin, from every index and wheel folder pip is configured with."""
    cfg = pip_config()
    indexes = [cfg.get("index-url", PYPI), *cfg.get("extra-index-url", "").split()]
    folders = [Path(p.removeprefix("file://")) for p in cfg.get("find-links", "").split()]
    context = ssl.create_default_context(cafile=cfg.get("cert") or None)
    out: dict[str, list[str]] = {}
    for name, version in sorted(pins.items()):
        found: set[str] = set()
        for index in indexes:
            found |= index_hashes(index, name, Version(version), context)
        for folder in folders:
            if folder.is_dir():
                found |= folder_hashes(folder, name, Version(version))
        if not found:
            raise SystemExit(f"{name}=={version}: no file of it on {indexes} or in {folders}")
        out[name] = sorted(found)
    return out


def main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = project["dependencies"]
    extras = project["optional-dependencies"]
    sets = {"serve": base + extras["serve"],
            "dev": base + [r for group in ("train", "serve", "bench", "dev") for r in extras[group]]}
    locks = {name: closure(reqs) for name, reqs in sets.items()}
    digests = hashes({n: v for pins in locks.values() for n, v in pins.items()})
    for name, pins in locks.items():
        lines = [f"# {name}: generated by tools/lock.py from pyproject.toml; torch is pinned separately (2.13.0).",
                 "# pip install --require-hashes -r: only the files whose SHA-256 is listed are installed."]
        for n, v in sorted(pins.items()):
            lines.append(" \\\n".join([f"{n}=={v}", *(f"    --hash=sha256:{h}" for h in digests[n])]))
        (ROOT / "requirements" / f"{name}.lock").write_text("\n".join(lines) + "\n")
        print(f"requirements/{name}.lock: {len(pins)} packages, {sum(len(digests[n]) for n in pins)} hashes")


if __name__ == "__main__":
    main()
