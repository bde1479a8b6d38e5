"""Render a kustomization the way ``kubectl apply -k`` does, for the subset these manifests use:
``resources`` (files and folders), ``images`` (newName/newTag) and ``patches`` (strategic-merge
patch files matched by kind and name). Anything else raises, so a manifest never relies on a
feature the tests would silently skip.

    python -m deploy.kustomize deploy/k8s/cpu     # prints the rendered YAML stream
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "images", "patches"}
# Lists Kubernetes merges by this key in a strategic-merge patch; every other list is replaced.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath", "ports": "containerPort", "tolerations": "key"}


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def merge(base: Any, patch: Any, key: str | None = None) -> Any:
    """Strategic merge: maps merge recursively; lists named in MERGE_KEYS merge item by item."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        by = MERGE_KEYS[key]
        out = [copy.deepcopy(item) for item in base]
        for item in patch:
            match = next((i for i, b in enumerate(out) if b.get(by) == item.get(by)), None)
            if match is None:
                out.append(copy.deepcopy(item))
            else:
                out[match] = merge(out[match], item)
        return out
    return copy.deepcopy(patch)


def _set_images(doc: Any, images: list[dict[str, str]]) -> None:
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k in ("containers", "initContainers") and isinstance(v, list):
                for c in v:
                    c["image"] = _new_image(c["image"], images)
            else:
                _set_images(v, images)
    elif isinstance(doc, list):
        for v in doc:
            _set_images(v, images)


def _new_image(ref: str, images: list[dict[str, str]]) -> str:
    name, _, tag = ref.partition(":")
    for img in images:
        if img["name"] == name:
            return f"{img.get('newName', name)}:{img.get('newTag', tag or 'latest')}"
    return ref


def render(folder: Path) -> list[dict[str, Any]]:
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise ValueError(f"{folder}/kustomization.yaml uses {sorted(unknown)}; deploy.kustomize renders only "
                         f"{sorted(SUPPORTED)}")
    docs: list[dict[str, Any]] = []
    for res in spec.get("resources", []):
        path = folder / res
        docs += render(path) if path.is_dir() else load_all(path)
    for entry in spec.get("patches", []):
        if set(entry) != {"path"}:
            raise ValueError(f"{folder}: only file patches ({{path: ...}}) are rendered, got {entry}")
        for patch in load_all(folder / entry["path"]):
            ident = (patch["kind"], patch["metadata"]["name"])
            hits = [i for i, d in enumerate(docs) if (d["kind"], d["metadata"]["name"]) == ident]
            if len(hits) != 1:
                raise ValueError(f"{folder}/{entry['path']}: {ident} matches {len(hits)} resources")
            docs[hits[0]] = merge(docs[hits[0]], patch)
    _set_images(docs, spec.get("images", []))
    return docs


def main(argv: list[str] | None = None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        raise SystemExit("usage: python -m deploy.kustomize FOLDER")
    print(yaml.safe_dump_all(render(Path(args[0])), sort_keys=False), end="")


if __name__ == "__main__":
    main()
