"""The layers, enforced (issue 28): a line each, checked on every import of every file, the ones inside
functions included.

- ``model``: the networks; imports nothing of ours.
- ``training``: the library; ``model``.
- ``app``: the service; ``model``.
- ``lab``: what measuring and the study share; ``model``, ``training``, ``app``.
- ``bench`` and ``experiments``, side by side: ``lab`` and below, never each other.
- ``deploy``: ``lab`` and below.

And no circle between files: a file never imports, through any chain, a file that imports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "model": set(),
    "training": {"model"},
    "app": {"model"},
    "lab": {"model", "training", "app"},
    "bench": {"lab", "model", "training", "app"},
    "experiments": {"lab", "model", "training", "app"},
    "deploy": {"lab", "model", "training", "app"},
}


def modules() -> dict[str, Path]:
    out = {}
    for package in ALLOWED:
        for f in (ROOT / package).rglob("*.py"):
            parts = f.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports (relative imports resolved; ``from x import y`` counts y when it
    is a module, else x)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_each_layer_imports_only_the_layers_below_it():
    wrong = []
    for name, targets in graph().items():
        layer = name.split(".")[0]
        for t in targets:
            other = t.split(".")[0]
            if other != layer and other not in ALLOWED[layer]:
                wrong.append(f"{name} -> {t}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_no_circles_between_files():
    g = graph()
    # Packages' __init__ files re-export their modules: an arrow into a package means its files, not a circle.
    g = {n: {t for t in ts if not (ROOT / t.replace(".", "/") / "__init__.py").is_file()} for n, ts in g.items()}
    state: dict[str, int] = {}
    circles = []

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for t in sorted(g.get(n, ())):
            if state.get(t) == 1:
                circles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, [*stack, t])
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n, [n])
    assert not circles, "circles:\n" + "\n".join(circles)


def test_the_checker_sees_what_it_should():
    """The graph finds a known arrow of each kind: absolute, relative, and inside a function."""
    g = graph()
    assert "model.checkpoint" in g["lab.assets"]  # absolute, at the top
    assert "app.api.inference" in g["app.api.routing"]  # relative
    assert "lab.server" in g["experiments.variants"]  # inside a function
