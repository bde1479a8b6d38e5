"""The make models pipeline end to end on a few hundred real examples: per-domain fields, the serve
configuration, and model selection that never reads a test split."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest

import model
from experiments import pipeline
from experiments.pipeline import PipelineConfig, build, evaluate, load_data, quick, with_retention


class Sealed(Mapping):
    """Test splits that fail on any read: what build() (training and selection) gets."""

    def __getitem__(self, key):
        raise AssertionError(f"the test split {key!r} was read during training or selection")

    def __iter__(self):
        raise AssertionError("the test splits were listed during training or selection")

    def __len__(self):
        raise AssertionError("the test splits were counted during training or selection")


def test_sealed_splits_catch_a_read():
    with pytest.raises(AssertionError):
        dict(Sealed())
    with pytest.raises(AssertionError):
        Sealed()["movies"]


def test_retention_and_score_per_domain():
    acc = {"movies": {"accuracy": 0.8}, "tweets": {"accuracy": 0.6}, "nyt": {"accuracy": 0.7}}
    teacher = {"movies": {"accuracy": 0.8}, "tweets": {"accuracy": 0.8}, "nyt": {"accuracy": 0.7}}
    r = with_retention(acc, teacher)
    assert r["retention_movies"] == 1.0 and r["retention_tweets"] == pytest.approx(0.75) and r["retention_nyt"] == 1.0
    assert r["accuracy_ood_mean"] == pytest.approx(0.65) and r["retention_ood_mean"] == pytest.approx(0.875)
    assert r["score"] == pytest.approx((1.0 + 0.875) / 2)


@pytest.mark.slow
def test_quick_pipeline_selects_on_dev_only_and_reports_every_domain(tmp_path):
    import transformers

    # As make models runs it: the classifiers through the compress command, the embedder in its own
    # lower-priority process beside it.
    cfg = quick(PipelineConfig(out=str(tmp_path), threads=1, workers=2))
    work = tmp_path / "work"
    work.mkdir()
    data = load_data(cfg, work)
    assert set(data.dev) == set(data.test) == {"movies", "tweets", "nyt"}
    built = build(cfg, replace(data, test=Sealed()), work, lambda name: None)
    # One compress run made the three classifiers, on the training split, every domain's dev split (its
    # dev_file, which chose each one's epoch) and the news sentences; no test file.
    report = built.compress
    assert {n: Path(p).resolve() for n, p in ((m, report["models"][m]["path"]) for m in report["models"])} == {
        "teacher": built.teacher.resolve(), "student": built.student.resolve(), "baseline": built.baseline.resolve()}
    assert report["data"]["rows"]["dev"] == sum(len(v) for v in data.dev.values()) and "test" not in report["splits"]
    assert report["data"]["extra_text"]["unlabeled"] == cfg.unlabeled
    assert report["data"]["extra_text"]["perturbed_copies"] == round(0.5 * report["data"]["rows"]["train"])
    assert report["selection"]["teacher"]["lr"] == 1e-4 and report["recipe"]["max_length"] == 64
    assert {"kept", "evaluated"} <= set(report["selection"]["student"]) <= set(report["selection"]["baseline"])
    # The baseline learns from the labels alone: no teacher signal of any kind reaches it.
    trained = json.loads((built.baseline / "training_config.json").read_text())
    assert trained["alpha"] == 0 and trained["alpha_embed"] == 0 and trained["embed_reference"] is None
    assert trained["unlabeled_file"] is None
    student_run = json.loads((built.student / "training_config.json").read_text())
    assert student_run["alpha"] == 1.0 and student_run["alpha_embed"] == 1.0
    res = evaluate(cfg, built, data, tmp_path)

    student, teacher = res["models"]["student"], res["models"]["teacher"]
    assert set(student["domains"]) == {"movies", "tweets", "nyt"}
    for d in ("movies", "tweets", "nyt"):
        assert student[f"retention_{d}"] == pytest.approx(student["domains"][d]["accuracy"]
                                                          / teacher["domains"][d]["accuracy"])
    assert {"accuracy_ood_mean", "retention_ood_mean", "speedup_b1", "teacher_agreement"} <= set(student)
    assert {"ood_retention_ge_0.97", "teacher_embedder_cosine_ge_0.99"} <= set(res["targets"])
    assert res["embeddings"]["teacher_embedder_vs_minilm"]["mean_cosine"] == pytest.approx(1.0, abs=1e-6)
    sizes = res["embeddings"]["embedders"]  # what the student embedder's fidelity costs, beside the teacher's
    assert sizes["student_embedder"]["layers"] == model.load(tmp_path / "student_embedder").config.num_layers
    assert sizes["teacher_embedder"]["layers"] == 6
    assert sizes["student_embedder"]["speedup_b1"] == pytest.approx(
        sizes["teacher_embedder"]["latency_ms_b1"] / sizes["student_embedder"]["latency_ms_b1"])
    for name in ("teacher", "student", "baseline"):
        loaded = model.load(tmp_path / name)
        assert loaded.task == "classification" and loaded.config.id2label == {0: "negative", 1: "positive"}
        assert transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / name) is not None
    assert model.load(tmp_path / "student").config.num_layers == 3
    assert model.load(tmp_path / "student_embedder").task == "base"
    assert model.read_pooling(tmp_path / "student_embedder") == "mean"

    serve = pipeline.serve_config(tmp_path)
    tasks = {(m["role"], m["task"]) for m in serve["models"]}
    assert tasks == {("student", "classify"), ("teacher", "classify"), ("student", "embed"), ("teacher", "embed")}
    json.dumps(serve)


def test_a_finished_stage_is_reused_only_with_the_same_configuration(tmp_path):
    from training.config import FinetuneConfig

    calls = []
    cfg = FinetuneConfig(model="m", train=replace(FinetuneConfig().train, out_dir=str(tmp_path / "run")))

    def fake_command(c):  # writes what an export writes: the folder and its training config
        calls.append(c)
        (tmp_path / "run" / "final").mkdir(parents=True, exist_ok=True)
        (tmp_path / "run" / "final" / "training_config.json").write_text(json.dumps(pipeline.to_dict(c), default=str))

    pipeline._run_once(fake_command, cfg)
    pipeline._run_once(fake_command, replace(cfg, train=replace(cfg.train, threads=1, log_every=3)))
    assert len(calls) == 1  # how it runs changed, not what it computes
    pipeline._run_once(fake_command, replace(cfg, train=replace(cfg.train, lr=1e-3)))
    pipeline._run_once(fake_command, replace(cfg, model="other"))
    assert len(calls) == 3


def test_a_finished_stage_is_retrained_when_a_file_it_read_changed_under_the_same_name(tmp_path):
    from training.config import TaskDistillConfig

    calls = []
    extra = tmp_path / "student.unlabeled.txt"
    extra.write_text("one sample of the snippets\n")
    cfg = TaskDistillConfig(teacher="t", unlabeled_file=str(extra),
                            train=replace(TaskDistillConfig().train, out_dir=str(tmp_path / "run")))

    def fake_command(c):  # resumes from a checkpoint when one is there, as the trainer does
        calls.append((tmp_path / "run" / "checkpoint.pt").is_file())
        (tmp_path / "run" / "checkpoint.pt").write_text("finished")
        (tmp_path / "run" / "final").mkdir(parents=True, exist_ok=True)
        (tmp_path / "run" / "final" / "training_config.json").write_text(json.dumps(pipeline.to_dict(c), default=str))

    pipeline._run_once(fake_command, cfg)
    pipeline._run_once(fake_command, cfg)
    assert calls == [False]
    extra.write_text("another sample of the snippets\n")  # same path, same configuration, other data
    pipeline._run_once(fake_command, cfg)
    assert calls == [False, False]  # trained again, and not resumed from the old data's checkpoint
    (tmp_path / "run" / "final" / "training_config.json").unlink()  # stopped after its checkpoint
    pipeline._run_once(fake_command, cfg)
    assert calls == [False, False, True]  # same data: resumed
    for record in (tmp_path / "run" / pipeline._INPUTS_RECORD, tmp_path / "run" / "final" / pipeline._INPUTS_RECORD):
        record.unlink()  # a run from before the records: what it read is unknown
    pipeline._run_once(fake_command, cfg)
    assert calls == [False, False, True, False]


def test_a_finished_stage_is_retrained_when_its_teacher_was_retrained_in_place(tmp_path):
    from training.config import TaskDistillConfig

    calls = []
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "model.safetensors").write_bytes(b"weights of the first teacher")
    cfg = TaskDistillConfig(teacher=str(teacher),
                            train=replace(TaskDistillConfig().train, out_dir=str(tmp_path / "run")))

    def fake_command(c):
        calls.append(c)
        (tmp_path / "run" / "final").mkdir(parents=True, exist_ok=True)
        (tmp_path / "run" / "final" / "training_config.json").write_text(json.dumps(pipeline.to_dict(c), default=str))

    pipeline._run_once(fake_command, cfg)
    pipeline._run_once(fake_command, cfg)
    assert len(calls) == 1
    (teacher / "model.safetensors").write_bytes(b"weights of a teacher trained again")  # same folder
    pipeline._run_once(fake_command, cfg)
    assert len(calls) == 2


def test_a_run_stopped_after_its_export_is_not_vouched_for_by_the_previous_record(tmp_path):
    from training.config import TaskDistillConfig

    extra = tmp_path / "extra.txt"
    extra.write_text("data A\n")
    cfg = TaskDistillConfig(teacher="t", unlabeled_file=str(extra),
                            train=replace(TaskDistillConfig().train, out_dir=str(tmp_path / "run")))
    calls = []

    def export(c):
        calls.append(c)
        (tmp_path / "run" / "final").mkdir(parents=True, exist_ok=True)
        (tmp_path / "run" / "final" / "training_config.json").write_text(json.dumps(pipeline.to_dict(c), default=str))

    pipeline._run_once(export, cfg)
    extra.write_text("data B\n")

    def export_then_die(c):
        export(c)
        raise KeyboardInterrupt  # stopped between the export and its record

    with pytest.raises(KeyboardInterrupt):
        pipeline._run_once(export_then_die, cfg)
    extra.write_text("data A\n")  # back to A: the export in final/ is B's, so it must not be reused
    pipeline._run_once(export, cfg)
    assert len(calls) == 3
