"""``make ablation``: which parts of the distillation recipe buy accuracy, in domain and out of it
(in the style of Table 4 of Sanh et al. 2019).

One teacher, fine-tuned for ``Budget.teacher_epochs`` (the ``make models`` teacher stage with the ablation's
budget; make models' own teacher is reused from artifacts/work when it was trained alike);
every row is one change to the plain recipe (task KD, every weight trainable, alpha 0.5, T 2, 3 layers),
trained on the same fixed subset of the training split for the same number of epochs (``Budget``: what
fits the 60-minute budget on a 2-core CPU). The plain recipe and the label-only baseline run with three
seeds (mean ± std), so a difference smaller than the seed noise is called that. Rows are scored on the
dev splits (in-domain dev and the out-of-domain dev halves: what the default recipe is chosen by) and on
the test splits (reported, never chosen by). Results: docs/ablation.json and docs/ablation.md, both written here.

    python -m experiments.ablation [--out artifacts/ablation] [--workers 2] [--quick]

Finished runs are kept in OUT/runs.json, so an interrupted ablation continues where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import multiprocessing
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from lab.datasets import LABELS, write_splits
from lab.environment import cpu_model
from lab.readme import write_section
from training.data import read_labeled
from training.paper import TEMPERATURE

from .pipeline import (
    BASELINE,
    IN_DOMAIN,
    Data,
    PipelineConfig,
    Recipe,
    accuracy_by_domain,
    cpu_seconds,
    general_distillation,
    load_data,
    quick,
    train_student,
    train_teacher,
    with_retention,
)

log = logging.getLogger("experiments.ablation")
# The reference recipe every row changes one thing of; spelled out, so a new default Recipe leaves it as it is.
PLAIN = Recipe(general_distillation=False, augment=False, perturbed=0.0, freeze_embeddings=False, alpha_embed=0.0,
               alpha_hidden=0.0, alpha=0.5, temperature=TEMPERATURE, layers=3)
UNLABELED = 2000  # news sentences of the augmentation row (1.3 per labeled snippet of the 1,500-snippet budget)
_DEFAULTS = PipelineConfig(unlabeled=UNLABELED)
SEEDS = (42, 43, 44)


@dataclass(frozen=True)
class Row:
    name: str
    recipe: Recipe
    seeds: tuple[int, ...] = SEEDS[:1]


ROWS = (
    Row("plain task KD, all weights trainable (α 0.5, T 2, 3 layers)", PLAIN, SEEDS),
    Row(f"+ general distillation first (news, {_DEFAULTS.general.train.max_steps} steps)",
        replace(PLAIN, general_distillation=True)),
    Row(f"+ unlabeled augmentation ({_DEFAULTS.unlabeled:,} news sentences scored by the teacher)",
        replace(PLAIN, augment=True)),
    Row("frozen word embeddings", replace(PLAIN, freeze_embeddings=True)),
    Row("+ embedding-preservation loss (pooled cosine to all-MiniLM-L6-v2, weight 1)",
        replace(PLAIN, alpha_embed=1.0, embed_toward="minilm")),
    Row("T = 1", replace(PLAIN, temperature=1.0)),
    Row("T = 4", replace(PLAIN, temperature=4.0)),
    Row("α = 0.9", replace(PLAIN, alpha=0.9)),
    Row("4 student layers", replace(PLAIN, layers=4)),
    Row("labels only (the baseline: no teacher)", BASELINE, SEEDS),
    Row("the previous default: general distillation + frozen embeddings + preservation loss + augmentation",
        replace(PLAIN, general_distillation=True, freeze_embeddings=True, alpha_embed=1.0, embed_toward="minilm",
                augment=True)),
    Row("+ representation loss (pooled cosine to the fine-tuned teacher's own, weight 1)",
        replace(PLAIN, alpha_embed=1.0, embed_toward="teacher")),
    # Three seeds for the two best rows at the student's size, the candidates for the default recipe.
    Row("+ augmentation + representation loss toward the teacher",
        replace(PLAIN, augment=True, alpha_embed=1.0, embed_toward="teacher"), SEEDS),
    Row("+ augmentation + representation loss toward the teacher, weight 2",
        replace(PLAIN, augment=True, alpha_embed=2.0, embed_toward="teacher")),
    Row("+ augmentation + representation loss toward the teacher + perturbed copies (one per snippet: a crop "
        "or word dropout, scored by the teacher)",
        replace(PLAIN, augment=True, alpha_embed=1.0, embed_toward="teacher", perturbed=1.0), SEEDS),
    Row("+ hidden-state loss (per token, each student layer toward the teacher layer it was copied from, "
        "weight 1)", replace(PLAIN, alpha_hidden=1.0)),
    Row("+ augmentation + representation loss toward the teacher + perturbed copies + hidden-state loss",
        replace(PLAIN, augment=True, alpha_embed=1.0, embed_toward="teacher", perturbed=1.0, alpha_hidden=1.0),
        SEEDS),
    # The weight of the labels against the teacher, on the recipe with perturbed copies (no hidden-state loss).
    Row("+ augmentation + representation loss toward the teacher + perturbed copies, α = 0.9",
        replace(PLAIN, augment=True, alpha_embed=1.0, embed_toward="teacher", perturbed=1.0, alpha=0.9)),
    Row("+ augmentation + representation loss toward the teacher + perturbed copies, α = 1 (no label loss)",
        replace(PLAIN, augment=True, alpha_embed=1.0, embed_toward="teacher", perturbed=1.0, alpha=1.0), SEEDS),
    Row("+ augmentation + representation loss toward the teacher + perturbed copies of half the snippets, α = 1",
        replace(PLAIN, augment=True, alpha_embed=1.0, embed_toward="teacher", perturbed=0.5, alpha=1.0), SEEDS),
)
METRICS = ("retention_movies", "retention_ood_mean", "accuracy_movies", "accuracy_ood_mean", "score")


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarize(runs: dict[str, dict], rows=ROWS, budget: Budget | None = None) -> list[dict]:
    """Per row and split: mean (± std over seeds) of each metric, and its difference from the plain
    recipe, called noise when smaller than the larger of the two rows' seed std."""
    out = []
    ref = None
    for row in rows:
        per_seed = [runs[_key(row, s, budget)] for s in row.seeds if _key(row, s, budget) in runs]
        if not per_seed:
            continue
        entry = {"name": row.name, "recipe": asdict(row.recipe), "seeds": [r["seed"] for r in per_seed],
                 "minutes": statistics.mean(r["seconds"] for r in per_seed) / 60}
        for split in ("dev", "test"):
            entry[split] = {m: _stats([r[split][m] for r in per_seed]) for m in METRICS}
        if ref is None:
            ref = entry
        for split in ("dev", "test"):
            for m in ("retention_movies", "retention_ood_mean"):
                d = entry[split][m]["mean"] - ref[split][m]["mean"]
                noise = max(entry[split][m]["std"], ref[split][m]["std"])
                entry[split][m] |= {"vs_plain": d, "within_noise": abs(d) <= noise}
        out.append(entry)
    return out


def choose(rows: list[dict], full_budget: dict | None = None) -> str:
    """The recipe ``make models`` uses. Candidates: the rows that keep the default student's size and learn
    from the teacher (more layers buy retention but break the 1.8x batch-1 speed target, and the label-only
    baseline is what the student must beat). The best dev score wins, unless rows within the seed noise of
    it (the largest std of the dev score over the rows run with three seeds) were also trained at make
    models' full budget (``full_budget``: docs/candidates.json, experiments.candidates): the ablation cannot
    tell those apart, so the full-budget dev score decides among them, the cheapest recipe winning where
    those scores are within the same noise too (``tie_break``)."""
    best, tied = _decide(rows, full_budget)
    return tied[0]["name"] if tied else best["name"]


def _decide(rows: list[dict], full_budget: dict | None) -> tuple[dict, list[dict]]:
    """The best eligible row on the ablation's dev score, and the rows tied with it (``tie_break``)."""
    ok = _eligible(rows)
    best = max(ok, key=lambda e: e["dev"]["score"]["mean"])
    return best, tie_break(ok, best, full_budget)


def _eligible(rows: list[dict]) -> list[dict]:
    """The rows that may become the default: the student's size, learning from the teacher."""
    return [e for e in rows if e["recipe"]["layers"] == PLAIN.layers and e["recipe"]["alpha"] > 0]


def tie_break(ok: list[dict], best: dict, full_budget: dict | None) -> list[dict]:
    """The rows tied with ``best`` that have a full-budget dev score, the chosen one first (empty without
    any): the best full-budget score, unless cheaper rows score within the same seed noise of it there
    too, and then the cheapest of those (``_cost``), so make models keeps to its 30 minutes when the
    evidence cannot tell the recipes apart."""
    if not full_budget:
        return []
    noise = _noise(ok)
    full = {_recipe_key(c["recipe"]): c["dev"]["score"] for c in full_budget["candidates"].values()}
    tied = [e for e in ok if e["dev"]["score"]["mean"] >= best["dev"]["score"]["mean"] - noise
            and _recipe_key(e["recipe"]) in full]
    if not tied:
        return []
    top = max(full[_recipe_key(e["recipe"])] for e in tied)
    return sorted(tied, key=lambda e: (full[_recipe_key(e["recipe"])] < top - noise, _cost(e["recipe"]),
                                       -full[_recipe_key(e["recipe"])]))


def _noise(ok: list[dict]) -> float:
    """The largest std of the dev score over the rows run with three seeds."""
    return max((e["dev"]["score"]["std"] for e in ok if len(e["seeds"]) > 1), default=0.0)


def _cost(recipe: dict) -> tuple:
    """What a recipe adds to make models' training time, for ordering: extra text per snippet (perturbed
    copies, then the news sentences), then the extra stages and the per-token teacher states."""
    return (recipe["perturbed"], recipe["augment"], recipe["general_distillation"], recipe["alpha_hidden"] > 0)


def _recipe_key(recipe: dict) -> str:
    return json.dumps(recipe, sort_keys=True)


def _choice_text(res: dict) -> str:
    """How the default was chosen, for the Markdown and the README."""
    best, tied = _decide(res["rows"], res.get("full_budget"))
    chosen = tied[0]["name"] if tied else best["name"]
    if not tied:
        return (f"Chosen default (the best dev score at the default student's size, since more layers miss the 1.8x "
                f"batch-1 speed target; the label-only baseline is not a candidate): **{chosen}**; `make models` "
                "uses it (experiments/pipeline.py's `Recipe`).")
    full = {_recipe_key(c["recipe"]): c for c in res["full_budget"]["candidates"].values()}
    scores = "; ".join(f"{e['name']}: {full[_recipe_key(e['recipe'])]['dev']['score']:.4f}" for e in tied)
    fb = res["full_budget"]
    top = max(full[_recipe_key(e["recipe"])]["dev"]["score"] for e in tied)
    noise = _noise(_eligible(res["rows"]))
    chosen_score = full[_recipe_key(tied[0]["recipe"])]["dev"]["score"]
    why = (f"the best there: **{chosen}**" if chosen_score == top else
           f"the cheapest of those within the seed noise ({noise:.4f}) of the best there too ({top:.4f}), "
           f"since the evidence cannot tell them apart and make models must keep to 30 minutes (fewer perturbed "
           f"copies, then no news, train faster): **{chosen}**")
    rows = f"{len(tied)} rows within the seed noise of it were" if len(tied) > 1 else \
        "1 row within the seed noise of it was"
    return (f"Chosen default: at the default student's size (more layers miss the 1.8x batch-1 speed target; the "
            f"label-only baseline is not a candidate) the best dev score is **{best['name']}**, but "
            f"{rows} also trained at make models' full budget "
            f"(`make candidates`, docs/candidates.json, {fb['created']}: a {fb['config']['teacher_epochs']}-epoch "
            f"teacher, {fb['config']['student_epochs']} student epochs on the whole train split), with these dev "
            f"scores (the same mean of retentions): {scores}. `make models` uses {why} "
            f"(experiments/pipeline.py's `Recipe`).")


def _key(row: Row, seed: int, budget: Budget | None = None) -> str:
    """A stored run's identity: the recipe, the seed, and whatever of the budget differs from the default
    ``Budget`` (so runs stored under the default stay valid, and a run under another budget, teacher
    included, is never taken for one of them)."""
    recipe = asdict(row.recipe)
    # embed_toward, perturbed and alpha_hidden came after runs were stored: left out where they change
    # nothing (no embedding loss, no perturbed copies, no hidden-state loss) or hold the only value those
    # runs knew, so they stay valid.
    if recipe["alpha_embed"] == 0 or recipe["embed_toward"] == "minilm":
        del recipe["embed_toward"]
    if not recipe["perturbed"]:
        del recipe["perturbed"]
    elif recipe["perturbed"] % 1:
        # A fractional share was once the train file's first texts, now a seeded sample: runs stored
        # before the change (keys without this mark) are retrained, not reused.
        recipe["perturbed_share"] = "sampled"
    if not recipe["alpha_hidden"]:
        del recipe["alpha_hidden"]
    default = Budget()
    changed = {k: v for k, v in asdict(budget or default).items() if v != getattr(default, k)}
    return json.dumps([recipe, seed, changed] if changed else [recipe, seed], sort_keys=True)


def markdown(res: dict) -> str:
    cfg = res["config"]
    lines = [
        "# Recipe ablation",
        "",
        f"Generated by `make ablation` (`python -m experiments.ablation`) on {res['created']} "
        f"({res['machine']['cpu']}, "
        f"{res['machine']['threads']} threads, torch {res['machine']['torch']}); total {res['minutes']:.1f} min"
        f"{_cpu(res)}{_kept(res)}. "
        f"Never edited by hand.",
        "",
        f"One teacher (all-MiniLM-L6-v2 fine-tuned on the movie-review train split, {cfg['teacher_epochs']} "
        f"epoch{'s' if cfg['teacher_epochs'] > 1 else ''}); "
        f"every student trains on the same {res['data']['train']} movie-review snippets for {cfg['epochs']} "
        f"epoch{'s' if cfg['epochs'] > 1 else ''} (batch 32, lr {cfg['lr']:g}, max length {cfg['max_length']}; "
        f"out-of-domain halves capped at {cfg['eval_cap']} examples each). Retention = student accuracy / "
        "teacher accuracy on the same split. Out-of-domain = mean over tweets and NYT editorial snippets, never "
        "trained on. Rows with three seeds show mean ± std; a difference from the plain recipe no larger than "
        "the seed std is marked *(noise)*.",
        "",
        "**Dev splits** (the evidence the default recipe is chosen by):",
        "",
    ]
    lines += _table(res, "dev")
    lines += ["", "**Test splits** (reported, never chosen by):", ""]
    lines += _table(res, "test")
    t = res["teacher"]
    lines += ["", "Teacher accuracy: " + "; ".join(
        f"{split} {', '.join(f'{d} {100 * a:.2f}%' for d, a in t[split].items())}" for split in ("dev", "test")),
        "", f"Best dev score (the mean of in-domain and out-of-domain retention): **{res['best']}**.",
        "", _choice_text(res)]
    if res.get("not_run"):
        lines += ["", "Not run within the budget (the ablation was stopped): " + "; ".join(res["not_run"]) + "."]
    return "\n".join(lines) + "\n"


def _kept(res: dict) -> str:
    n = res.get("runs_kept", 0)
    if not n:
        return ""
    worker_min = sum(e["minutes"] * len(e["seeds"]) for e in res["rows"])
    workers = res["config"]["workers"]
    return (f" for the runs this invocation trained; {n} runs were kept from earlier invocations. All "
            f"{sum(len(e['seeds']) for e in res['rows'])} runs took {worker_min:.1f} worker-minutes in all "
            f"(about {worker_min / workers:.0f} min on {workers} workers, plus their teacher)")


def _cpu(res: dict) -> str:
    return f", {res['cpu_minutes']:.0f} CPU-minutes" if res.get("cpu_minutes") is not None else ""


def readme_section(res: dict) -> str:
    """The README's summary: the test-split table, the choice made on dev, and where the rest is."""
    cfg = res["config"]
    lines = [f"Written by `make ablation` on {res['created']} ({res['minutes']:.0f} min{_cpu(res)}{_kept(res)}): "
             "every row "
             f"trains on the same {res['data']['train']} movie-review snippets for "
             f"{cfg['epochs']} epoch{'s' if cfg['epochs'] > 1 else ''} from the same teacher (fine-tuned for "
             f"{cfg['teacher_epochs']} epoch{'s' if cfg['teacher_epochs'] > 1 else ''}: the ablation's own budget, "
             f"whatever make models' teacher gets); retention on the test "
             "splits, mean ± std over three seeds where shown; (noise) marks a difference from the plain recipe "
             "within the seed std. The dev-split table the default recipe is chosen by, and every number, are in "
             "[docs/ablation.md](docs/ablation.md).", ""]
    lines += _table(res, "test")
    lines += ["", f"Best on the dev splits: **{res['best']}**. {_choice_text(res)}"]
    if res.get("not_run"):
        lines += ["", f"Stopped before {len(res['not_run'])} run(s) of the plan: " + "; ".join(res["not_run"]) + "."]
    return "\n".join(lines)


def _table(res: dict, split: str) -> list[str]:
    lines = ["| recipe | seeds | in-domain retention | out-of-domain retention | in-domain accuracy "
             "| out-of-domain accuracy |", "|---|---:|---:|---:|---:|---:|"]

    def cell(s: dict, diff: bool) -> str:
        text = f"{100 * s['mean']:.1f}%" + (f" ± {100 * s['std']:.1f}" if s["std"] else "")
        if diff and "vs_plain" in s:
            text += f" ({100 * s['vs_plain']:+.1f}{', noise' if s['within_noise'] else ''})"
        return text

    for i, e in enumerate(res["rows"]):
        m = e[split]
        lines.append(f"| {e['name']} | {len(e['seeds'])} | {cell(m['retention_movies'], i > 0)} "
                     f"| {cell(m['retention_ood_mean'], i > 0)} | {cell(m['accuracy_movies'], False)} "
                     f"| {cell(m['accuracy_ood_mean'], False)} |")
    return lines


@dataclass(frozen=True)
class Budget:
    """What every row gets: the same training subset, epochs and evaluation sets."""

    train: int = 1500  # movie-review training snippets (a fixed, seeded subset)
    epochs: int = 1
    # The ablation's own teacher budget, fixed so that stored runs stay comparable when make models'
    # teacher changes (that teacher is shared when both are trained alike).
    teacher_epochs: int = 1
    eval_cap: int = 400  # examples per out-of-domain half (the in-domain splits are used whole)


def _subset(data: Data, budget: Budget, seed: int, out: Path) -> Data:
    rows = read_labeled(data.files["train"], id2label=LABELS)
    pick = sorted(random.Random(seed).sample(range(len(rows.texts)), min(budget.train, len(rows.texts))))
    train = write_splits({"train": [(rows.texts[i], rows.labels[i]) for i in pick]}, out)["train"]

    def cap(sets):
        return {d: v if d == IN_DOMAIN else random.Random(seed).sample(v, min(budget.eval_cap, len(v)))
                for d, v in sets.items()}

    return replace(data, files=data.files | {"train": train}, dev=cap(data.dev), test=cap(data.test),
                   counts=data.counts | {"train": len(pick)})


def _one(cfg: PipelineConfig, data: Data, work: Path, teacher: Path, row: Row, seed: int, t_dev, t_test,
         budget: Budget) -> dict:
    """One student of one row: trained, then scored on dev and test (a worker process runs this)."""
    t_run = time.perf_counter()
    key = _key(row, seed, budget)
    name = "ablation/run_" + hashlib.sha256(key.encode()).hexdigest()[:10]  # beside the shared stages
    path = train_student(cfg, data.files, work, teacher, row.recipe, name, seed)
    max_length = cfg.student.max_length
    return {"row": row.name, "seed": seed, "seconds": time.perf_counter() - t_run,
            "dev": with_retention(accuracy_by_domain(path, data.dev, max_length), t_dev),
            "test": with_retention(accuracy_by_domain(path, data.test, max_length), t_test)}


def run(out: Path, work: Path, budget: Budget, is_quick: bool, workers: int, threads: int | None,
        rows=ROWS) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "ablation.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    cfg = PipelineConfig(out=str(out), threads=threads, unlabeled=UNLABELED)
    shared = cfg.teacher.train.epochs == budget.teacher_epochs
    cfg = replace(cfg, teacher=replace(cfg.teacher, train=replace(cfg.teacher.train, epochs=budget.teacher_epochs)))
    if threads:
        torch.set_num_threads(threads)
    cfg = replace(cfg, student=replace(cfg.student, train=replace(cfg.student.train, epochs=budget.epochs)))
    if is_quick:
        cfg = quick(cfg)
    t0 = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    full = load_data(cfg, work)
    # make models' teacher when trained alike (reused when already trained), else the ablation's own
    name = "teacher" if shared else f"ablation/teacher_{budget.teacher_epochs}ep"
    teacher = train_teacher(cfg, full.files, work, name)
    data = _subset(full, budget, cfg.seed, out / "data")
    max_length = cfg.student.max_length
    t_dev, t_test = (accuracy_by_domain(teacher, s, max_length) for s in (data.dev, data.test))
    store = out / "runs.json"
    runs = json.loads(store.read_text()) if store.is_file() else {}
    todo = [(row, seed) for row in rows for seed in row.seeds if _key(row, seed, budget) not in runs]
    kept = sum(1 for row in rows for seed in row.seeds) - len(todo)
    msg = f"[ablation] {len(todo)} runs to do ({len(runs)} kept from before), {workers} worker(s)"
    log.info(msg)
    print(msg, file=sys.stderr, flush=True)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        def submit(jobs):
            return {pool.submit(_one, cfg, data, work, teacher, row, seed, t_dev, t_test, budget): (row, seed)
                    for row, seed in jobs}

        futures = submit([(r, s) for r, s in todo if not r.recipe.general_distillation])
        later = [(r, s) for r, s in todo if r.recipe.general_distillation]
        if later:  # the generally distilled student they start from: made here while the workers run
            general_distillation(cfg, full.files, work, PLAIN.layers)
            futures |= submit(later)
        for i, fut in enumerate(as_completed(futures)):
            row, seed = futures[fut]
            runs[_key(row, seed, budget)] = rec = fut.result()
            store.write_text(json.dumps(runs, indent=2) + "\n")
            left = (time.perf_counter() - t0) / (i + 1) * (len(todo) - i - 1) / 60
            dev = rec["dev"]
            msg = (f"[ablation] {i + 1}/{len(todo)} done: {row.name}, seed {seed}: dev retention in-domain "
                   f"{100 * dev['retention_movies']:.1f}%, out-of-domain {100 * dev['retention_ood_mean']:.1f}% "
                   f"({rec['seconds'] / 60:.1f} min; about {left:.0f} min left)")
            log.info(msg)
            print(msg, file=sys.stderr, flush=True)
    summary = summarize(runs, rows, budget)
    best = max(summary, key=lambda e: e["dev"]["score"]["mean"])["name"]
    return {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "minutes": (time.perf_counter() - t0) / 60,
        "cpu_minutes": cpu_seconds() / 60,
        "config": {"epochs": budget.epochs, "train": budget.train, "eval_cap": budget.eval_cap,
                   "teacher_epochs": cfg.teacher.train.epochs, "lr": cfg.student.train.lr, "max_length": max_length,
                   "seeds": list(SEEDS), "workers": workers, "quick": is_quick},
        "data": data.counts,
        "teacher": {"dev": {d: r["accuracy"] for d, r in t_dev.items()},
                    "test": {d: r["accuracy"] for d, r in t_test.items()}},
        "rows": summary,
        "runs_kept": kept,  # finished by an earlier invocation: "minutes" covers the others only
        "best": best,
    }


def from_runs(out: Path, budget: Budget, workers: int, rows=ROWS) -> dict:
    """The result from the finished runs in OUT/runs.json alone (an ablation stopped before its end):
    the teacher's accuracies follow from any run (accuracy / retention), the rows not run are listed."""
    runs = json.loads((out / "runs.json").read_text())
    any_run = next(iter(runs.values()))
    domains = [k.removeprefix("accuracy_") for k in any_run["dev"]
               if k.startswith("accuracy_") and k != "accuracy_ood_mean"]
    teacher = {split: {d: any_run[split][f"accuracy_{d}"] / any_run[split][f"retention_{d}"] for d in domains}
               for split in ("dev", "test")}
    summary = summarize(runs, rows, budget)
    log_file = out / "ablation.log"
    started = log_file.stat().st_ctime if log_file.is_file() else (out / "runs.json").stat().st_ctime
    pipeline = PipelineConfig()
    return {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpu": cpu_model(), "threads": 1, "torch": torch.__version__},
        "minutes": ((out / "runs.json").stat().st_mtime - started) / 60,
        "cpu_minutes": None,  # not known without the process that ran them
        "config": {"epochs": budget.epochs, "train": budget.train, "eval_cap": budget.eval_cap,
                   "teacher_epochs": budget.teacher_epochs, "lr": pipeline.student.train.lr,
                   "max_length": pipeline.student.max_length, "seeds": list(SEEDS), "workers": workers,
                   "quick": False},
        "data": {"train": budget.train},
        "teacher": teacher,
        "rows": summary,
        "not_run": [f"{r.name}, seed {s}" for r in rows for s in r.seeds if _key(r, s, budget) not in runs],
        "best": max(summary, key=lambda e: e["dev"]["score"]["mean"])["name"],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.ablation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("artifacts/ablation"))
    p.add_argument("--work", type=Path, default=Path("artifacts/work"),
                   help="the make models work folder: its teacher is reused when trained as the ablation's")
    p.add_argument("--epochs", type=int, default=Budget.epochs, help="epochs per student (the same for every row)")
    p.add_argument("--train", type=int, default=Budget.train, help="training snippets per student (a fixed subset)")
    p.add_argument("--workers", type=int, default=3, help="students trained at once (processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--quick", action="store_true", help="tiny data and budget (tests)")
    p.add_argument("--json", type=Path, default=Path("docs/ablation.json"))
    p.add_argument("--markdown", type=Path, default=Path("docs/ablation.md"))
    p.add_argument("--readme", type=Path, help="also write the ablation section of this README")
    p.add_argument("--report-only", action="store_true", help="train nothing: the Markdown from --json")
    p.add_argument("--from-runs", action="store_true",
                   help="train nothing: the JSON and Markdown from the runs finished so far (OUT/runs.json)")
    p.add_argument("--candidates", type=Path, default=Path("docs/candidates.json"),
                   help="full-budget dev scores that break ties within the seed noise (experiments.candidates)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.report_only:
        res = json.loads(args.json.read_text())
    elif args.from_runs:
        res = from_runs(args.out, Budget(train=args.train, epochs=args.epochs), args.workers)
    else:
        res = run(args.out, args.work, Budget(train=args.train, epochs=args.epochs), args.quick, args.workers,
                  args.threads)
    res.pop("full_budget", None)  # what the candidates file says now, not what an older run read
    if args.candidates.is_file() and not args.quick:
        res["full_budget"] = json.loads(args.candidates.read_text())
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=2) + "\n")
    args.markdown.write_text(markdown(res))
    if args.readme:
        write_section(args.readme, "ablation", readme_section(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
