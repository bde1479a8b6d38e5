"""The ablation's summary: mean ± std over seeds, differences from the plain recipe called noise when
they are within the seed std, the default chosen on dev scores only."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from experiments.ablation import PLAIN, ROWS, SEEDS, Row, _key, choose, markdown, summarize
from experiments.pipeline import Recipe


def _run(row: Row, seed: int, dev_movies: float, dev_ood: float, test_movies: float, test_ood: float) -> dict:
    def split(m, o):
        return {"retention_movies": m, "retention_ood_mean": o, "accuracy_movies": 0.8 * m,
                "accuracy_ood_mean": 0.7 * o, "score": (m + o) / 2}

    return {"row": row.name, "seed": seed, "seconds": 60.0, "dev": split(dev_movies, dev_ood),
            "test": split(test_movies, test_ood)}


def test_rows_cover_the_issue_and_seed_the_default_and_baseline_three_times():
    recipes = [r.recipe for r in ROWS]
    assert ROWS[0].recipe == PLAIN and ROWS[0].seeds == SEEDS and len(SEEDS) == 3
    baseline = next(r for r in ROWS if r.recipe.alpha == 0.0)
    assert baseline.seeds == SEEDS
    default = next(r for r in ROWS if r.recipe == Recipe())  # the recipe make models uses
    assert default.seeds == SEEDS
    for change in ({"general_distillation": True}, {"augment": True}, {"freeze_embeddings": True},
                   {"alpha_embed": 1.0}, {"temperature": 1.0}, {"temperature": 4.0}, {"alpha": 0.9}, {"layers": 4}):
        assert replace(PLAIN, **change) in recipes, change


def test_summary_calls_a_difference_within_the_seed_std_noise():
    plain, small, big = ROWS[0], Row("small change", replace(PLAIN, temperature=4.0)), \
        Row("big change", replace(PLAIN, alpha=0.9))
    runs = {}
    for seed, (dm, do) in zip(SEEDS, [(0.96, 0.95), (0.98, 0.97), (0.97, 0.96)], strict=True):
        runs[_key(plain, seed)] = _run(plain, seed, dm, do, dm, do)
    runs[_key(small, 42)] = _run(small, 42, 0.975, 0.965, 0.975, 0.965)  # +0.005: within std 0.01
    runs[_key(big, 42)] = _run(big, 42, 0.93, 0.99, 0.93, 0.99)  # -0.04 / +0.03: beyond it
    rows = summarize(runs, (plain, small, big))
    p, s, b = rows
    assert p["dev"]["retention_movies"]["mean"] == pytest.approx(0.97)
    assert p["dev"]["retention_movies"]["std"] == pytest.approx(0.01)
    assert s["dev"]["retention_movies"]["within_noise"] and s["dev"]["retention_ood_mean"]["within_noise"]
    assert not b["dev"]["retention_movies"]["within_noise"]
    assert b["dev"]["retention_movies"]["vs_plain"] == pytest.approx(-0.04)
    res = {"created": "now", "machine": {"cpu": "cpu", "threads": 1, "torch": "2"}, "minutes": 1.0,
           "cpu_minutes": 2.0, "config": {"epochs": 1, "train": 3000, "eval_cap": 800, "teacher_epochs": 1,
                                          "lr": 1e-4, "max_length": 64},
           "data": {"train": 3000}, "teacher": {"dev": {"movies": 0.8}, "test": {"movies": 0.8}},
           "rows": rows, "best": "big change"}
    text = markdown(res)
    assert "| small change | 1 | 97.5% (+0.5, noise)" in text
    assert "| big change | 1 | 93.0% (-4.0) | 99.0% (+3.0)" in text
    assert "97.0% ± 1.0" in text and "**big change**" in text


def _entry(name: str, recipe, score: float) -> dict:
    return {"name": name, "recipe": asdict(recipe), "dev": {"score": {"mean": score, "std": 0.0}}}


def test_choice_keeps_the_students_size_and_never_picks_the_baseline():
    rows = [_entry("plain", PLAIN, 0.90), _entry("wide", replace(PLAIN, layers=4), 0.99),
            _entry("labels", replace(PLAIN, alpha=0.0), 0.95), _entry("aug", replace(PLAIN, augment=True), 0.92)]
    assert choose(rows) == "aug"  # 4 layers misses the speed target; the baseline is not a candidate
    assert choose(rows[:3]) == "plain"


def test_a_tie_within_the_seed_noise_goes_to_the_best_full_budget_dev_score():
    def entry(name, recipe, score, std=0.0, seeds=(42,)):
        return {"name": name, "recipe": asdict(recipe), "seeds": list(seeds),
                "dev": {"score": {"mean": score, "std": std}}}

    a, b, c = replace(PLAIN, augment=True), replace(PLAIN, alpha=0.9), replace(PLAIN, alpha=1.0)
    rows = [entry("plain", PLAIN, 0.90, 0.010, SEEDS), entry("a", a, 0.95), entry("b", b, 0.942),
            entry("c", c, 0.93)]  # noise 0.01: a and b are tied, c is not
    full = {"candidates": {"x": {"recipe": asdict(b), "dev": {"score": 0.99}},
                           "y": {"recipe": asdict(a), "dev": {"score": 0.975}},
                           "z": {"recipe": asdict(c), "dev": {"score": 0.999}}}}
    assert choose(rows) == "a"  # no full-budget evidence: the best ablation dev score
    assert choose(rows, full) == "b"  # tied with a, and better at the full budget
    del full["candidates"]["x"]
    assert choose(rows, full) == "a"  # c's full-budget score does not count: it is beyond the noise


def test_rows_tied_at_the_full_budget_too_go_to_the_cheapest():
    def entry(name, recipe, score, std=0.0, seeds=(42,)):
        return {"name": name, "recipe": asdict(recipe), "seeds": list(seeds),
                "dev": {"score": {"mean": score, "std": std}}}

    one, half = replace(PLAIN, perturbed=1.0, alpha=1.0), replace(PLAIN, perturbed=0.5, alpha=1.0)
    rows = [entry("plain", PLAIN, 0.90, 0.010, SEEDS), entry("one copy", one, 0.95), entry("half", half, 0.945)]
    full = {"candidates": {"x": {"recipe": asdict(one), "dev": {"score": 0.990}},
                           "y": {"recipe": asdict(half), "dev": {"score": 0.985}}}}
    assert choose(rows, full) == "half"  # 0.005 below, within the noise (0.01): fewer copies train faster
    full["candidates"]["y"]["dev"]["score"] = 0.975
    assert choose(rows, full) == "one copy"  # beyond the noise: the better score wins whatever it costs


def test_make_models_uses_the_recipe_the_committed_ablation_chose():
    res = json.loads((Path(__file__).resolve().parents[2] / "docs" / "ablation.json").read_text())
    chosen = next(e for e in res["rows"] if e["name"] == choose(res["rows"], res.get("full_budget")))
    assert chosen["recipe"] == asdict(Recipe())
    assert Recipe() != PLAIN  # the evidence moved the default off the reference recipe


def test_the_student_baseline_gap_is_held_to_the_ablations_seed_noise():
    from experiments.report import seed_noise, versus_baseline

    def row(seeds, std_in, std_ood):
        return {"seeds": seeds, "test": {"accuracy_movies": {"std": std_in}, "accuracy_ood_mean": {"std": std_ood}}}

    noise = seed_noise({"rows": [row([1, 2, 3], 0.005, 0.018), row([1], 0.0, 0.0), row([1, 2, 3], 0.003, 0.012)]})
    assert noise == {"accuracy_movies": 0.005, "accuracy_ood_mean": 0.018}
    domains = {"movies": {"accuracy": 0.85}, "tweets": {"accuracy": 0.66}, "nyt": {"accuracy": 0.74}}
    res = {"models": {"student": {"accuracy": 0.85, "accuracy_ood_mean": 0.70, "domains": domains},
                      "baseline": {"accuracy": 0.84, "accuracy_ood_mean": 0.69,
                                   "domains": domains | {"tweets": {"accuracy": 0.61}, "nyt": {"accuracy": 0.75}}}}}
    assert "not above it on both ❌" in versus_baseline(res, noise)  # +1.0 in-domain, but +1.0 < 1.8 out of it
    res["models"]["baseline"]["accuracy_ood_mean"] = 0.67
    text = versus_baseline(res, noise)
    assert "above it on both ✅" in text and "+3.0 out-of-domain" in text
    assert "(tweets +5.0, NYT editorials -1.0)" in text  # each out-of-domain set, not only their mean


def test_every_full_budget_candidate_is_an_ablation_row_and_the_committed_scores_match_them():
    """choose() links candidates to rows by recipe: a candidate that matches no row would be ignored."""
    from experiments.candidates import CANDIDATES

    recipes = [r.recipe for r in ROWS]
    for name, (_, recipe) in CANDIDATES.items():
        assert recipe in recipes, name
    committed = json.loads((Path(__file__).resolve().parents[2] / "docs" / "candidates.json").read_text())
    assert {n: c["recipe"] for n, c in committed["candidates"].items()} == \
        {n: asdict(r) for n, (_, r) in CANDIDATES.items()}


def test_a_stored_run_is_only_reused_under_the_budget_it_was_trained_with():
    """Runs stored under the default budget keep their keys; another teacher, epoch count or subset gives
    another key (and another run folder), so it is trained, never taken from the store."""
    from experiments.ablation import Budget

    row = ROWS[0]
    assert _key(row, 42) == _key(row, 42, Budget())
    others = {_key(row, 42, b) for b in (Budget(teacher_epochs=2), Budget(epochs=2), Budget(train=3000))}
    assert len(others) == 3 and _key(row, 42) not in others


def test_scoring_some_candidates_keeps_the_others_only_under_the_same_configuration():
    from experiments.candidates import CANDIDATES, merge

    cfg = {"teacher_epochs": 2, "student_epochs": 3, "seed": 42}
    a05 = {"dev": 1, "recipe": asdict(CANDIDATES["a05"][1])}
    old = {"config": cfg, "candidates": {"a05": a05, "a10p5": {"dev": 2}, "gone": {"dev": 3}}}
    new = {"config": cfg, "created": "now", "candidates": {"a10p5": {"dev": 4}}}
    merged = merge(old, new)
    assert merged["created"] == "now" and merged["candidates"] == {"a05": a05, "a10p5": {"dev": 4}}
    assert list(merged["candidates"]) == ["a05", "a10p5"]  # CANDIDATES' order, whatever was scored last
    assert merge(old | {"config": cfg | {"teacher_epochs": 1}}, new)["candidates"] == {"a10p5": {"dev": 4}}
    old["candidates"]["a05"]["recipe"] = asdict(replace(CANDIDATES["a05"][1], alpha=0.7))  # the recipe changed since
    assert merge(old, new)["candidates"] == {"a10p5": {"dev": 4}}
