"""bench/gpu_check.sh and what travels with it (bench/gpu_wheels.py): everything the script runs imports either
what the GPU image holds or a wheel `make gpu-wheels` downloads, each wheel's own requirements too; no downloads."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from bench import gpu_wheels

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_check.sh"
FIRST_PARTY = {"model", "training", "lab", "experiments", "app", "bench", "tests", "deploy"}
DIST_OF = {"yaml": "pyyaml"}  # import name -> distribution, where they differ beyond - and _
MARKERS = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def _path(module: str) -> Path | None:
    p = ROOT.joinpath(*module.split("."))
    return p / "__init__.py" if (p / "__init__.py").is_file() else p.with_suffix(".py") if p.with_suffix(
        ".py").is_file() else None


def _imports(module: str, path: Path):
    """Every module name an import of this file can mean (those inside functions too)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            yield base
            yield from (f"{base}.{a.name}" for a in node.names)


def _entry_modules() -> set[str]:
    """What the script runs: python -m X, the pytest files (with their conftests), the modules its -c imports."""
    text = SCRIPT.read_text()
    mods = {m for m in re.findall(r"-m ([a-z_][\w.]*)", text) if m.split(".")[0] in FIRST_PARTY}
    mods |= {m + ".__main__" for m in mods if _path(m + ".__main__")}
    mods |= set(re.findall(r"^\s*from ([a-z_][\w.]*) import", text, re.M))
    for line in re.findall(r"^\s*import ([^#\n]+)", text, re.M):
        mods |= {part.split()[0] for part in line.split(",")}
    for test in re.findall(r"(tests/\S+\.py)", text):
        mods.add(test[:-3].replace("/", "."))
        folder = (ROOT / test).parent
        while folder != ROOT:
            if (folder / "conftest.py").is_file():
                mods.add(str((folder / "conftest").relative_to(ROOT)).replace("/", "."))
            folder = folder.parent
    return {m for m in mods if m.split(".")[0] in FIRST_PARTY}


def _third_party(entries: set[str]) -> dict[str, set[str]]:
    """Top-level third-party names imported anywhere in the first-party closure of ``entries`` -> by whom."""
    seen, todo, found = set(), list(entries), {}
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # a module imports its packages first
        path = _path(module)
        if path is None:
            continue
        for name in _imports(module, path):
            top = name.split(".")[0]
            if top in FIRST_PARTY:
                todo.append(name)
            elif top and top not in sys.stdlib_module_names and top != "__future__":
                found.setdefault(top, set()).add(module)
    return found


def test_the_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_the_script_runs_what_the_test_follows():
    entries = _entry_modules()
    for m in ("bench.__main__", "bench.model_speed", "bench.train_speed", "bench.paper_models", "tests.fixtures",
              "tests.model.test_gpu", "tests.app.test_backends_gpu", "tests.app.conftest", "app.main"):
        assert m in entries, m
    assert all(_path(m) for m in entries), [m for m in entries if not _path(m)]


def test_every_import_the_script_reaches_is_in_the_image_or_travels():
    travels = set(gpu_wheels.WHEELS) | gpu_wheels.IMAGE_PACKAGES
    entries = _entry_modules() | {"app.__main__", "app.backends.onnx"}  # what the sweeps' service processes run
    missing = {top: sorted(by)[:3] for top, by in _third_party(entries).items()
               if gpu_wheels.canonical(DIST_OF.get(top, top)) not in travels}
    assert not missing, f"imported there but neither in the GPU image nor in bench/gpu_wheels.WHEELS: {missing}"


def test_each_wheel_needs_only_what_is_there_or_travels():
    travels = set(gpu_wheels.WHEELS) | gpu_wheels.IMAGE_PACKAGES
    for name in gpu_wheels.WHEELS:
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            pytest.skip(f"{name} is not installed here (make install): its requirements cannot be read")
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(MARKERS):
                assert gpu_wheels.canonical(req.name) in travels, f"{name} needs {req.name}: add it to WHEELS"


def test_each_wheel_is_pinned_by_a_lock_and_none_is_in_twice():
    versions = gpu_wheels.pins()
    assert [n for n in gpu_wheels.WHEELS if n not in versions] == []
    assert all(gpu_wheels.canonical(n) == n for n in gpu_wheels.WHEELS)
    assert [r.split("==")[0] for r in gpu_wheels.requirements()] == list(gpu_wheels.WHEELS)
    assert gpu_wheels.wheel_key("pydantic_core-2.50.5-cp312-cp312-manylinux2014_x86_64.whl") == ("pydantic-core",
                                                                                                "2.50.5")


def test_the_image_lacks_what_the_issue_says_and_the_wheels_bring_it():
    for name in ("fastapi", "starlette", "uvicorn", "pydantic", "pydantic-core", "pydantic-settings"):
        assert name not in gpu_wheels.IMAGE_PACKAGES and name in gpu_wheels.WHEELS
    for name in ("torch", "transformers", "tokenizers", "onnxruntime", "numpy", "pytest"):
        assert name in gpu_wheels.IMAGE_PACKAGES and name not in gpu_wheels.WHEELS  # never shadow these


def test_the_script_leaves_at_most_eight_files_in_out():
    """The device tool brings back 8 files from $OUT; the script writes three there (and a part of one)."""
    names = set(re.findall(r'"\$OUT/([^"/$]+)"', SCRIPT.read_text()))
    assert names <= {"summary.txt", "gpu_check.log", "gpu_check.tar.gz", "gpu_check.tar.gz.part"}, names


def test_make_gpu_wheels_runs_the_module():
    text = (ROOT / "Makefile").read_text()
    assert re.search(r"^gpu-wheels:.*\n\t\$\(PY\) -m bench\.gpu_wheels --out \.whl$", text, re.M)
    assert "/.whl/" in (ROOT / ".gitignore").read_text().splitlines()
