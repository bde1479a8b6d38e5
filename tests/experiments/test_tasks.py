"""experiments/tasks.py: the evidence tasks are deterministic, split by hash with no NYT article in two
splits, the rare label rare, the pairs half "same"; experiments/evidence.py writes its page from the results."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from experiments import evidence, tasks


def _corpora(root: Path, n: int = 400) -> dict[str, Path]:
    rng = random.Random(0)
    folders = {"sentiment": root / "sentiment", "sentiment_ood": root / "sentiment_ood"}
    for corpus, (asset, name) in tasks.CORPORA.items():
        folders[asset].mkdir(parents=True, exist_ok=True)
        lines = ["id\tsentiment\ttext"]
        for i in range(n):
            rid = f"{i // 5 + 1}_{i % 5 + 1}" if corpus == "nyt" else str(i + 1)
            lines.append(f"{rid}\t{rng.uniform(-4, 4):.3f}\t{corpus} text number {i} with words {rng.random():.6f}")
        (folders[asset] / name).write_text("\n".join(lines) + "\n")
    return folders


def test_tasks_are_deterministic_and_split_nyt_by_article(tmp_path):
    folders = _corpora(tmp_path)
    a = tasks.write_tasks(tmp_path / "a", folders=folders)
    b = tasks.write_tasks(tmp_path / "b", folders=folders)
    assert a == b and set(a) == set(tasks.TASKS)
    for name in tasks.TASKS:
        for split in tasks.SPLITS:
            first, again = (tmp_path / d / name / f"{split}.csv" for d in ("a", "b"))
            assert first.read_bytes() == again.read_bytes()
    corpora = tasks.load_corpora(folders)
    split = tasks.source(corpora)
    where: dict[str, set[str]] = {}
    for s, rows in split.items():
        for r in rows:
            where.setdefault(r["group"], set()).add(s)
    assert all(len(v) == 1 for v in where.values())  # no article's sentences in two splits
    per_article = Counter(r["group"] for rows in split.values() for r in rows if r["label"] == "nyt")
    assert max(per_article.values()) > 1  # articles with several sentences, each article in one split


def test_the_rare_label_is_rare_and_pairs_are_half_same(tmp_path):
    corpora = tasks.load_corpora(_corpora(tmp_path))
    rows = [r for s in tasks.source(corpora, common=300, rare=30).values() for r in s]
    counts = Counter(r["label"] for r in rows)
    assert counts == {"movie": 300, "tweet": 300, "nyt": 30}
    pairs = [r for s in tasks.same_source(corpora, per_corpus=300).values() for r in s]
    share = sum(r["label"] == "same" for r in pairs) / len(pairs)
    assert 0.4 < share < 0.6 and all(r["text"] != r["text_pair"] for r in pairs)


@pytest.mark.parametrize("score,label", [(-4, "very negative"), (-2, "very negative"), (-1.9, "negative"),
                                         (-0.5, "negative"), (0, "neutral"), (0.49, "neutral"), (0.5, "positive"),
                                         (1.99, "positive"), (2, "very positive"), (3.9, "very positive")])
def test_sentiment_bins(score, label):
    assert tasks.sentiment_bin(score) == label


def _report(retention: float) -> dict:
    per = {"a": {"f1": 0.9, "support": 5, "predicted": 5}, "b": {"f1": 0.5, "support": 1, "predicted": 0}}
    split = {n: {"accuracy": acc, "macro_f1": 0.7, "per_label": per, "n": 6, **({"retention": acc / 0.9}
                                                                                  if n != "teacher" else {})}
             for n, acc in (("teacher", 0.9), ("student", 0.9 * retention), ("baseline", 0.8))}
    kept = {"step": 10, "epoch": 1, "accuracy": 0.9, "macro_f1": 0.8}
    run = {"kept": kept, "evaluated": [kept], "steps": 10, "lr": 1e-4}
    return {"created": "2026-12-06 18:00:00", "labels": {"0": "a", "1": "b"}, "data": {"rows": {"train": 50, "dev": 6,
            "test": 6}}, "splits": {"test": split}, "models": {n: {"speedup_b1": 2.0 if n == "student" else 1.0,
            "latency_ms_b1": 1.0} for n in split}, "wall_time_s": 60, "stages": {"teacher": {"seconds": 30}},
            "recipe": {"teacher_epochs": 3, "teacher_lrs": [1e-4, 2e-4]},
            "selection": {"teacher": {"lr": 1e-4, "epoch": 1, "class_weights": None,
                                      "candidates": [{"lr": 1e-4, **run}, {"lr": 2e-4, **run}]},
                          "student": run, "baseline": run},
            "warnings": ["baseline never predicts ['b'] on test, though test has 1 such rows"]}


def test_the_evidence_page_is_written_from_the_results_alone(tmp_path):
    results = {"runs": []}
    for seed, retention in ((42, 0.99), (43, 0.95)):
        row = evidence.row_of(_report(retention), "source", seed, "defaults", "python -m training compress ...",
                              90.0, 150.0, (1.0, 2.0))
        results = evidence.merge(results, row)
    results = evidence.merge(results, row)  # a rerun replaces its row
    assert [(r["seed"], r["wall_minutes"]) for r in results["runs"]] == [(42, 1.5), (43, 1.5)]
    evidence.write_docs(results, tmp_path / "compress.md", tmp_path / "compress.png")
    md = (tmp_path / "compress.md").read_text()
    assert "95.0% to 99.0%" in md and "met in 1 of 2" in md and "never predicts ['b']" in md
    assert "| source | defaults | 42 |" in md and (tmp_path / "compress.png").stat().st_size > 0
    json.dumps(results)  # plain data


def test_an_unfinished_run_shows_its_teacher_sweep_so_far(tmp_path):
    out = tmp_path / "source-defaults-s42"
    kept = {"step": 10, "epoch": 1, "accuracy": 0.9, "macro_f1": 0.8}
    for lr, what in ((5e-5, "first"), (1e-4, "done")):
        d = out / "work" / "teacher" / f"lr{lr:g}"
        d.mkdir(parents=True)
        (d / f"{what}.json").write_text(json.dumps({"lr": lr, "kept": kept, "evaluated": [kept], "steps": 30}))
    (out / ".stages").mkdir()
    (out / ".stages" / "teacher.json").write_text(json.dumps({"key": "k", "seconds": 120.0, "selection": {}}))
    p = evidence.progress_of(out)
    assert [v["lr"] for v in p["teacher_sweep"]] == [0.0001, 5e-05]
    assert p["stages_done"] == {"teacher": {"seconds": 120.0}}
    md = evidence.markdown({"runs": [], "unfinished": {out.name: p}})
    assert "source-defaults-s42: teacher sweep: lr 0.0001: 1 epoch(s) trained" in md and "teacher (2.0 min)" in md
