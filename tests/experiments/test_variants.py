"""make models' variants step on tiny checkpoints: every variant measured as the service loads it,
the fastest within the budget chosen, serve.json and the README section written."""

from __future__ import annotations

import json

import pytest

from experiments import variants
from tests.fixtures import write_tiny


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    write_tiny(root / "teacher", "bert", "classification", seed=1, layers=2)
    write_tiny(root / "student", "distilbert", "classification", seed=2, layers=1)
    write_tiny(root / "student_embedder", "distilbert", "base", seed=3, layers=1, pooling="mean")
    (root / "serve.json").write_text(json.dumps({"models": [
        {"name": "student", "path": str(root / "student"), "role": "student", "task": "classify"},
        {"name": "student-embedder", "path": str(root / "student_embedder"), "role": "student", "task": "embed"},
        {"name": "elsewhere", "path": "/models/other", "role": "other"}]}))
    (root / "results.json").write_text(json.dumps({"models": {"teacher": {}}}))
    return root


@pytest.fixture(scope="module")
def measured(artifacts):
    readme = artifacts / "README.md"
    readme.write_text(f"intro\n{variants.START}\nold\n{variants.END}\n")
    variants.main(["--artifacts", str(artifacts), "--readme", str(readme), "--limit", "24", "--rounds", "8",
                   "--embed-sentences", "24", "--http-block-s", "0.5"])
    return json.loads((artifacts / "results.json").read_text())


def test_every_variant_measured(measured):
    v = measured["variants"]
    assert measured["models"] == {"teacher": {}}  # the pipeline's results are kept
    assert set(v["models"]) == {"teacher", "student", "student_embedder"}  # no teacher_embedder here: skipped
    for name, rows in v["models"].items():
        assert list(rows) == ["torch fp32", "torch int8", "onnx fp32", "onnx int8"]
        for r in rows.values():
            assert r["latency_ms_b1"] > 0 and r["throughput_b32"] > 0
        assert rows["torch fp32"]["embedding_cosine_min"] == pytest.approx(1.0)
        assert rows["onnx fp32"]["max_abs_pooled_diff"] <= 1e-4  # ONNX Runtime computes what torch does
        if name != "student_embedder":
            assert set(rows["onnx int8"]["domains"]) >= {"movies"}
            assert rows["onnx fp32"]["agreement_with_fp32"] == 1.0
    assert v["targets"]["onnx_fp32_within_1e-4"]
    h = v["http_16_inputs_c8"]  # through a real service process
    assert len(h["blocks"]["teacher"]) == len(h["blocks"]["student"]) == 3
    assert h["ratio"] == pytest.approx(h["inputs_per_s"]["student"] / h["inputs_per_s"]["teacher"])


def test_choice_is_the_fastest_within_budget(measured):
    v = measured["variants"]
    for name, rows in v["models"].items():
        ok = {n: r for n, r in rows.items() if r["within_budget"]}
        assert v["chosen"][name] == max(ok, key=lambda n: ok[n]["throughput_b32"])


def test_serve_json_and_readme(artifacts, measured):
    chosen = measured["variants"]["chosen"]
    entries = {e["name"]: e for e in json.loads((artifacts / "serve.json").read_text())["models"]}
    assert f"{entries['student']['backend']} {entries['student']['precision']}" == chosen["student"]
    assert (f"{entries['student-embedder']['backend']} {entries['student-embedder']['precision']}"
            == chosen["student_embedder"])
    assert "backend" not in entries["elsewhere"]
    # An ONNX entry names the digest of the export it serves; the service checks it on load.
    from model.checkpoint import file_sha256

    for name, folder in (("student", "student"), ("student-embedder", "student_embedder")):
        e = entries[name]
        if e["backend"] == "onnx":
            assert e["sha256"] == file_sha256(artifacts / folder / "onnx" / f"{e['precision']}.onnx"), name
        else:
            assert "sha256" not in e, name
    text = (artifacts / "README.md").read_text()
    assert "\nold\n" not in text and "| student | onnx int8" in text and "(served)" in text
    assert "Not measured (not in the artifacts folder then): teacher_embedder." in text


def test_update_serve_records_the_digest_of_each_onnx_export(artifacts, measured, tmp_path):
    """Whatever the timings chose above: an entry switched to ONNX gets its export's SHA-256, one switched
    back to torch loses it."""
    from model.checkpoint import file_sha256

    serve = tmp_path / "serve.json"
    serve.write_text((artifacts / "serve.json").read_text())
    variants.update_serve(serve, {"student": "onnx int8", "student_embedder": "onnx fp32"}, artifacts)
    entries = {e["name"]: e for e in json.loads(serve.read_text())["models"]}
    assert entries["student"]["sha256"] == file_sha256(artifacts / "student" / "onnx" / "int8.onnx")
    assert entries["student-embedder"]["sha256"] == file_sha256(artifacts / "student_embedder" / "onnx" / "fp32.onnx")
    variants.update_serve(serve, {"student": "torch fp32"}, artifacts)
    entries = {e["name"]: e for e in json.loads(serve.read_text())["models"]}
    assert "sha256" not in entries["student"] and entries["student-embedder"]["sha256"]


def test_budget():
    ref = {"accuracy": 0.90, "accuracy_ood_mean": 0.80, "embedding_cosine_mean": 1.0}
    assert variants.within_budget({"accuracy": 0.891, "accuracy_ood_mean": 0.79, "embedding_cosine_mean": 0.99}, ref)
    assert not variants.within_budget({"accuracy": 0.889, "accuracy_ood_mean": 0.80, "embedding_cosine_mean": 0.99},
                                      ref)
    assert not variants.within_budget({"accuracy": 0.90, "accuracy_ood_mean": 0.80, "embedding_cosine_mean": 0.97},
                                      ref)
