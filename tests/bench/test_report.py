"""Numbers in the README come from results files: the generated sentences and tables say what the file says."""

from __future__ import annotations

import json

from bench import model_speed
from bench.report import long_inputs, roles


def _level(model: str, c: int, inputs_per_s: float, profile: str = "long") -> dict:
    return {"level": {"model": model, "endpoint": "/classify", "profile": profile, "mode": "closed",
                      "concurrency": c}, "inputs_per_s": inputs_per_s}


def test_long_inputs_sentence_is_the_runs_range():
    models = [{"role": "teacher", "name": "t"}, {"role": "student", "name": "s"}]
    data = {"environment": {"service": {"models": models}},
            "results": [_level("t", 1, 30.0), _level("s", 1, 60.0), _level("t", 8, 40.0), _level("s", 8, 64.0),
                        _level("t", 32, 50.0), _level("s", 32, 95.0), _level("s", 1, 999.0, profile="short")]}
    line = long_inputs(data)
    assert "1.60–2.00× the teacher's across concurrency 1–32" in line
    assert "60.0 vs 30.0 inputs/s at concurrency 1" in line and "95.0 vs 50.0 inputs/s at concurrency 32" in line
    data["results"] = [r for r in data["results"] if r["level"]["profile"] != "long"]
    assert long_inputs(data) is None  # no long-input levels: no sentence rather than a wrong one


def test_model_speed_readme_section_is_written_from_the_json(tmp_path):
    result = {"created": "2026-01-02 03:04:05",
              "env": {"device": "cpu", "cpu": "Some CPU", "threads": 2, "torch": "2.13.0", "transformers": "5.0",
                      "dtype": "float32", "repeats": 7},
              "rows": [{"batch": 1, "tokens": 128, "ours_bert": 100.0, "ours_distilbert": 50.0, "hf_distilbert": 55.0,
                        "student_over_teacher": 0.5, "ours_over_transformers": 50 / 55}]}
    (tmp_path / "ms.json").write_text(json.dumps(result))
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- model-speed:start -->\nold\n<!-- model-speed:end -->\nafter\n")
    model_speed.main(["--report-only", "--json", str(tmp_path / "ms.json"), "--readme", str(readme)])
    text = readme.read_text()
    assert "old" not in text and text.endswith("<!-- model-speed:end -->\nafter\n")
    assert "on 2026-01-02 03:04:05: cpu (Some CPU)" in text
    assert "| 1 × 128 | 100.0 | 50.0 | 55.0 | 0.500 | 0.909 |" in text


def test_accuracy_rows_read_make_models_results_where_the_teacher_has_no_retention():
    from bench.report import accuracy_rows

    models = {"teacher": {"accuracy": 0.88, "accuracy_ood_mean": 0.66, "parameters": 22_700_000},
              "student": {"accuracy": 0.8536, "retention": 0.97, "accuracy_ood_mean": 0.6402,
                          "retention_ood_mean": 0.97, "parameters": 17_400_000}}
    rows = accuracy_rows(models)
    assert rows[0] == "| test accuracy, movie-review sentiment (`make models`) | 88.00% | 85.36% | 0.970 |"
    assert rows[1].startswith("| test accuracy, out-of-domain mean") and rows[1].endswith("| 66.00% | 64.02% | 0.970 |")
    assert rows[2] == "| parameters | 22.7M | 17.4M | 0.77 |"
    del models["student"]["retention"], models["student"]["accuracy_ood_mean"]  # an older results file
    rows = accuracy_rows(models)
    assert rows[0].endswith("| 0.970 |") and len(rows) == 2


def test_roles_are_the_measured_classifiers_when_the_embedders_share_the_roles():
    """A served configuration (artifacts/serve.json) has a student and a teacher per task: the sweep's
    teacher and student are the classifiers it measured, not whichever model of the role came last."""
    models = [{"role": "student", "name": "student"}, {"role": "teacher", "name": "teacher"},
              {"role": "student", "name": "student-embedder"}, {"role": "teacher", "name": "teacher-embedder"}]
    data = {"environment": {"service": {"models": models}},
            "results": [_level("student", 1, 100.0, "short"), _level("teacher", 1, 50.0, "short")]}
    assert roles(data) == {"student": "student", "teacher": "teacher"}
