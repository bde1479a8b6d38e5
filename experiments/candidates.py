"""Full-budget candidates: the recipes ``make ablation`` cannot tell apart, trained as ``make models`` trains
its student and scored on the dev splits, to break the tie.

The ablation trains each row on 1,500 snippets for one epoch, where several recipes land within the seed
noise of each other. Some choices only show at the full budget (three epochs on the whole train split): the
weight of the labels, for one, whose pull away from the teacher grows with the epochs. Each candidate here is
one ablation row's recipe, trained with make models' own configuration (its teacher included) and scored on
the dev splits only, as make models' selection scores (``pipeline.select``). ``ablation.choose`` reads the
result: among the rows tied at the ablation's budget, the one with the best full-budget dev score.

    python -m experiments.candidates [--work artifacts/work] [--out docs/candidates.json] [--workers 2]
                                     [--only NAME ...]

Finished students are reused (same configuration, same data), so a stopped run continues. ``--only``
trains and scores the named candidates and keeps the others' entries in ``--out`` (each entry says when it
was scored and how long its invocation took).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import torch

from lab.environment import cpu_model

from .ablation import PLAIN
from .pipeline import PipelineConfig, Recipe, load_data, select, train_student, train_teacher

log = logging.getLogger("experiments.candidates")

# Run name -> (what it is, recipe); each recipe is also an ablation row's (``ablation.ROWS``), which is how
# choose() links them, so they are spelled from the ablation's reference recipe, not from Recipe()'s
# defaults. The students train into WORK/cand_<name>.
_TEACHER_SIGNALS = replace(PLAIN, augment=True, alpha_embed=1.0, embed_toward="teacher")
CANDIDATES = {
    "a05": ("α 0.5, a perturbed copy of every snippet", replace(_TEACHER_SIGNALS, alpha=0.5, perturbed=1.0)),
    "a09": ("α 0.9, a perturbed copy of every snippet", replace(_TEACHER_SIGNALS, alpha=0.9, perturbed=1.0)),
    "a10": ("α 1, a perturbed copy of every snippet", replace(_TEACHER_SIGNALS, alpha=1.0, perturbed=1.0)),
    "a10p5": ("α 1, perturbed copies of half the snippets", replace(_TEACHER_SIGNALS, alpha=1.0, perturbed=0.5)),
}


def run(work: Path, workers: int, threads: int | None, candidates: dict[str, tuple[str, Recipe]] = CANDIDATES,
        cfg: PipelineConfig | None = None) -> dict:
    cfg = cfg or PipelineConfig(threads=threads, workers=workers)
    t0 = time.perf_counter()
    data = load_data(cfg, work)
    teacher = train_teacher(cfg, data.files, work)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {n: pool.submit(train_student, cfg, data.files, work, teacher, r, f"cand_{n}")
                   for n, (_, r) in candidates.items()}
        paths = {n: f.result() for n, f in futures.items()}
    _, dev = select(paths, teacher, data.dev, cfg.student.max_length)
    for name, scores in dev.items():
        log.info("%s: dev score %.4f (in-domain retention %.4f, out-of-domain %.4f)", name, scores["score"],
                 scores["retention_movies"], scores["retention_ood_mean"])
    created, minutes = time.strftime("%Y-%m-%d %H:%M:%S"), (time.perf_counter() - t0) / 60
    return {"created": created,
            "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__},
            "minutes": minutes,
            "config": {"teacher_epochs": cfg.teacher.train.epochs, "student_epochs": cfg.student.train.epochs,
                       "seed": cfg.seed},
            "candidates": {n: {"label": label, "recipe": asdict(r), "dev": dev[n], "created": created,
                               "minutes": minutes} for n, (label, r) in candidates.items()}}


def merge(old: dict, new: dict) -> dict:
    """``new`` (some candidates) over ``old`` (the file's): the others' entries are kept when they were
    scored under the same configuration (teacher and student budgets, seed) and recipe, dropped otherwise."""
    kept = {n: e for n, e in old.get("candidates", {}).items()
            if n not in new["candidates"] and n in CANDIDATES and old.get("config") == new["config"]
            and e.get("recipe") == asdict(CANDIDATES[n][1])}
    return new | {"candidates": {n: (kept | new["candidates"])[n] for n in CANDIDATES
                                 if n in kept or n in new["candidates"]}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.candidates", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("artifacts/work"),
                   help="make models' work folder: its teacher is reused when trained alike")
    p.add_argument("--out", type=Path, default=Path("docs/candidates.json"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", nargs="+", choices=sorted(CANDIDATES), metavar="NAME",
                   help=f"train and score these only, keep the others' entries in --out ({', '.join(CANDIDATES)})")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    res = run(args.work, args.workers, args.threads,
              {n: CANDIDATES[n] for n in args.only} if args.only else CANDIDATES)
    if args.only and args.out.is_file():
        res = merge(json.loads(args.out.read_text()), res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"[candidates] wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
