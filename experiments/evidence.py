"""Evidence for ``compress``'s defaults on more than one task: ``python -m training compress`` run as a user
would run it (base= all-MiniLM-L6-v2, so it fine-tunes its teacher; baseline=true; a 3-layer student) on
each task of ``experiments.tasks``, one seed or more, with the wall and CPU time of the whole command.

    python -m experiments.evidence [--tasks source sentiment5 ...] [--seeds 42 43] [--variant defaults]
    make evidence

Each run is one subprocess (``nice -n 5``, as the machine is shared); its report.json is read back and a
row merged into docs/compress.json (keyed by task, seed and variant, so runs add up across invocations),
then docs/compress.md and docs/compress.png are written from that file alone: every number in them comes
from a run's report.json. ``--variant previous`` runs the recipe this command replaced (teacher 2 epochs at
lr 1e-4, student 3 epochs, no class weights: the options that spell it out) for a before/after row.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from .tasks import PAIR_TASKS, TASKS, write_tasks

log = logging.getLogger("experiments.evidence")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "compress.json"
DOC = ROOT / "docs" / "compress.md"
PLOT = ROOT / "docs" / "compress.png"
STUDENT_LAYERS = 3
# The recipe before issue 27 (fixed epochs and learning rates, plain cross-entropy), as options.
VARIANTS = {"defaults": [], "previous": ["teacher_lr=1e-4", "teacher_epochs=2", "epochs=3", "class_weight=none"]}
TARGETS = {"retention": 0.97, "minutes": 20.0}


def command(task: str, data: Path, out: Path, seed: int, variant: str, base: Path) -> list[str]:
    args = [f"base={base}", f"train_file={data / 'train.csv'}", f"dev_file={data / 'dev.csv'}",
            f"test_file={data / 'test.csv'}", f"out_dir={out}", "baseline=true", f"student_layers={STUDENT_LAYERS}",
            f"seed={seed}", "progress=false", *VARIANTS[variant]]
    if task in PAIR_TASKS:
        args.append("text_pair_column=text_pair")
    return [sys.executable, "-m", "training", "compress", *args]


def run_one(task: str, seed: int, variant: str, work: Path, base: Path) -> dict:
    """One compress run, timed from outside (wall and CPU seconds of the process, the load around it)."""
    out = work / "runs" / f"{task}-{variant}-s{seed}"
    cmd = command(task, work / "tasks" / task, out, seed, variant, base)
    shown = " ".join(["python", *cmd[1:]]).replace(str(ROOT) + "/", "")
    log.info("%s seed %d (%s): %s", task, seed, variant, shown)
    out.parent.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with (work / "runs" / f"{task}-{variant}-s{seed}.log").open("w") as f:
        subprocess.run(["nice", "-n", "5", *cmd], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, check=True)
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = json.loads((out / "report.json").read_text())
    return row_of(report, task, seed, variant, shown, wall, (cpu1.ru_utime + cpu1.ru_stime)
                  - (cpu0.ru_utime + cpu0.ru_stime), (load_before, os.getloadavg()[0]))


def row_of(r: dict, task: str, seed: int, variant: str, cmd: str, wall: float, cpu: float,
           load: tuple[float, float]) -> dict:
    test = r["splits"]["test"]
    sel = r.get("selection", {})

    def kept(n: str) -> dict | None:
        if n not in sel:
            return None
        s = sel[n]
        return {"lr": s.get("lr"), "epochs_trained": s["evaluated"][-1]["epoch"], "epoch_kept": s["kept"]["epoch"],
                "steps": s.get("steps"), "dev_accuracy": s["kept"]["accuracy"], "dev_macro_f1": s["kept"]["macro_f1"]}

    teacher = sel.get("teacher", {})
    return {
        "task": task, "seed": seed, "variant": variant, "created": r["created"], "command": cmd,
        "rows": r["data"]["rows"], "labels": list(r["labels"].values()),
        "test": {n: {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "retention": m.get("retention"),
                     "per_label_f1": {k: v["f1"] for k, v in m["per_label"].items()}} for n, m in test.items()},
        "speedup_b1": r["models"]["student"]["speedup_b1"],
        "latency_ms_b1": {n: m["latency_ms_b1"] for n, m in r["models"].items()},
        "wall_minutes": round(wall / 60, 2), "report_wall_minutes": round(r["wall_time_s"] / 60, 2),
        "cpu_minutes": round(cpu / 60, 2), "load_before_after": [round(x, 2) for x in load],
        "stage_seconds": {n: s["seconds"] for n, s in r["stages"].items()},
        "chosen": {"teacher": {"lr": teacher.get("lr"), "epoch_kept": teacher.get("epoch"),
                               "epochs_trained": r["recipe"]["teacher_epochs"], "lrs_tried": r["recipe"]["teacher_lrs"],
                               "class_weights": teacher.get("class_weights"),
                               "sweep": [{"lr": c["lr"], "epoch_kept": c["kept"]["epoch"],
                                          "dev_accuracy": c["kept"]["accuracy"], "dev_macro_f1": c["kept"]["macro_f1"]}
                                         for c in teacher.get("candidates", [])]},
                   "student": kept("student"), "baseline": kept("baseline")},
        "warnings": r["warnings"],
    }


def progress_of(out: Path) -> dict:
    """What an unfinished run (no report.json yet) has recorded: the teacher's sweep so far (each learning
    rate's dev scores) and the stages done, read from its stage records."""
    sweep = []
    for d in sorted((out / "work" / "teacher").glob("lr*")):
        for what in ("done", "first"):
            if (f := d / f"{what}.json").is_file():
                c = json.loads(f.read_text())
                sweep.append({"lr": c["lr"], "epochs_trained": c["evaluated"][-1]["epoch"],
                              "epoch_kept": c["kept"]["epoch"], "dev_accuracy": c["kept"]["accuracy"],
                              "dev_macro_f1": c["kept"]["macro_f1"]})
                break
    stages = {}
    for f in sorted((out / ".stages").glob("*.json")):
        rec = json.loads(f.read_text())
        stages[f.stem] = {"seconds": rec["seconds"]} | ({"dev": {k: rec["selection"]["kept"][k]
                                                                 for k in ("accuracy", "macro_f1")}}
                                                        if "kept" in rec.get("selection", {}) else {})
    return {"teacher_sweep": sweep, "stages_done": stages}


def merge(results: dict, row: dict) -> dict:
    rows = [x for x in results.get("runs", []) if (x["task"], x["seed"], x["variant"])
            != (row["task"], row["seed"], row["variant"])]
    results["runs"] = sorted([*rows, row], key=lambda x: (list(TASKS).index(x["task"]), x["variant"], x["seed"]))
    return results


# -- the page -----------------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def summary_line(results: dict) -> str:
    runs = [x for x in results["runs"] if x["variant"] == "defaults"]
    if not runs:
        return "No run with the defaults yet."
    ret = [x["test"]["student"]["retention"] for x in runs]
    vs = sum(x["test"]["student"]["accuracy"] >= x["test"]["baseline"]["accuracy"] for x in runs)
    slow = [x for x in runs if x["wall_minutes"] > TARGETS["minutes"]]
    return (f"With the defaults, over {len(runs)} run(s) on {len({x['task'] for x in runs})} task(s), the 3-layer "
            f"student keeps {100 * min(ret):.1f}% to {100 * max(ret):.1f}% of its teacher's test accuracy "
            f"(target {100 * TARGETS['retention']:.0f}%: met in {sum(r >= TARGETS['retention'] for r in ret)} of "
            f"{len(ret)}), is at least as accurate as the labels-only baseline trained for as many steps in "
            f"{vs} of {len(runs)}, runs {min(x['speedup_b1'] for x in runs):.2f}x to "
            f"{max(x['speedup_b1'] for x in runs):.2f}x its teacher's batch-1 CPU speed, and the whole command "
            f"took {min(x['wall_minutes'] for x in runs):.1f} to {max(x['wall_minutes'] for x in runs):.1f} "
            f"minutes ({len(slow)} over the {TARGETS['minutes']:.0f}-minute target; see the load column).")


def markdown(results: dict) -> str:
    env = results.get("machine", {})
    lines = [
        "# compress: evidence for the defaults", "",
        "Written by `python -m experiments.evidence` (`make evidence`) from `docs/compress.json`; every number "
        "below is read from a `compress` run's report.json. Do not edit by hand.", "",
        f"Machine: {env.get('cpu', '?')}, {env.get('cores', '?')} cores, torch {env.get('torch', '?')}. "
        "The machine is shared: the load average before and after each run is shown, and the CPU minutes of the "
        "command beside its wall minutes.", "",
        f"**{summary_line(results)}**", "",
        "Each run: `python -m training compress base=all-MiniLM-L6-v2 (the pinned asset) train_file dev_file "
        f"test_file baseline=true student_layers={STUDENT_LAYERS} seed=S` on a task of `experiments/tasks.py`; "
        "`defaults` is the command as it stands, `previous` the recipe it replaced (teacher 2 epochs at lr 1e-4, "
        "student 3 epochs, plain cross-entropy, given as options).", "",
        "## Tasks", "",
        "| task | labels | train / dev / test rows | what it is |", "|---|---|---|---|",
    ]
    what = {"movies": "movie-review snippets, negative / positive (make models' task)",
            "source": "which corpus a snippet is from; nyt cut to about 5% (the rare label)",
            "sentiment5": "the sentiment score in five bins, across the three corpora",
            "same_source": "sentence pairs: are both snippets from the same corpus (solvable text by text: "
                           "checks the pair plumbing, not a relation between sentences)"}
    seen = {}
    for x in results["runs"]:
        seen.setdefault(x["task"], x)
    for t, x in seen.items():
        lines.append(f"| {t} | {', '.join(x['labels'])} | {x['rows']['train']} / {x['rows']['dev']} / "
                     f"{x['rows']['test']} | {what.get(t, '')} |")
    lines += ["", "## Test accuracy, retention, speed, time", "",
              "| task | variant | seed | teacher acc / macro-F1 | student acc / macro-F1 | baseline acc / macro-F1 | "
              "retention (student) | retention (baseline) | speed-up b1 | wall min | CPU min | load before/after |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in results["runs"]:
        t = x["test"]
        lines.append(
            f"| {x['task']} | {x['variant']} | {x['seed']} | "
            + " | ".join(f"{_pct(t[n]['accuracy'])} / {t[n]['macro_f1']:.3f}"
                         for n in ("teacher", "student", "baseline"))
            + f" | {_pct(t['student']['retention'])} | {_pct(t['baseline']['retention'])} | "
              f"{x['speedup_b1']:.2f}x | {x['wall_minutes']:.1f} | {x['cpu_minutes']:.1f} | "
              f"{x['load_before_after'][0]:.1f} / {x['load_before_after'][1]:.1f} |")
    lines += ["", "## Chosen on dev", "",
              "The teacher: each learning rate tried for the epochs shown, evaluated on dev after every epoch, the "
              "best (learning rate, epoch) by dev accuracy + macro-F1 kept; the student and the baseline keep their "
              "best epoch the same way; the baseline trains as many optimizer steps as the student.", "",
              "| task | variant | seed | teacher: lr kept (dev acc / macro-F1 of each lr tried) | teacher epoch "
              "kept / trained | class weights | student epoch kept / trained (steps) | baseline epoch kept / trained "
              "(steps) |",
              "|---|---|---|---|---|---|---|---|"]
    for x in results["runs"]:
        c = x["chosen"]
        t, s, b = c["teacher"], c["student"], c["baseline"]
        sweep = ", ".join(f"{v['lr']:g}: {_pct(v['dev_accuracy'])} / {v['dev_macro_f1']:.3f}" for v in t["sweep"])
        lines.append(f"| {x['task']} | {x['variant']} | {x['seed']} | {t['lr']:g} ({sweep}) | "
                     f"{t['epoch_kept']:g} / {t['epochs_trained']} | {t['class_weights'] or 'none'} | "
                     f"{s['epoch_kept']:g} / {s['epochs_trained']:g} ({s['steps']}) | "
                     f"{b['epoch_kept']:g} / {b['epochs_trained']:g} ({b['steps']}) |")
    lines += ["", "## Per-label test F1", "", "| task | variant | seed | model | per-label F1 |",
              "|---|---|---|---|---|"]
    for x in results["runs"]:
        for n in ("teacher", "student", "baseline"):
            f1 = x["test"][n]["per_label_f1"]
            lines.append(f"| {x['task']} | {x['variant']} | {x['seed']} | {n} | "
                         + ", ".join(f"{k} {v:.3f}" for k, v in f1.items()) + " |")
    warned = [(x, w) for x in results["runs"] for w in x["warnings"]]
    if warned:
        lines += ["", "## Warnings the reports gave", ""]
        lines += [f"- {x['task']} ({x['variant']}, seed {x['seed']}): {w}" for x, w in warned]
    if results.get("unfinished"):
        lines += ["", "## Runs not finished when this page was written", "",
                  "What their stage records held (dev scores only; no test numbers before a run ends).", ""]
        for name, u in results["unfinished"].items():
            sweep = "; ".join(f"lr {v['lr']:g}: {v['epochs_trained']:g} epoch(s) trained, epoch {v['epoch_kept']:g} "
                              f"kept, dev {_pct(v['dev_accuracy'])} / {v['dev_macro_f1']:.3f}"
                              for v in u["teacher_sweep"]) or "nothing recorded yet"
            stages = ", ".join(f"{k} ({v['seconds'] / 60:.1f} min)" for k, v in u["stages_done"].items()) or "none"
            lines.append(f"- {name}: teacher sweep: {sweep}. Stages finished: {stages}.")
    lines += ["", "## Commands", ""]
    lines += [f"- {x['task']} ({x['variant']}, seed {x['seed']}, {x['created']}): `{x['command']}`"
              for x in results["runs"]]
    lines += ["", "![test accuracy by task: teacher, student, baseline](compress.png)", ""]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = results["runs"]
    labels = [f"{x['task']}\n{x['variant']} s{x['seed']}" for x in runs]
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(runs)), 3.8))
    width = 0.27
    for i, n in enumerate(("teacher", "student", "baseline")):
        ax.bar([k + (i - 1) * width for k in range(len(runs))], [100 * x["test"][n]["accuracy"] for x in runs],
               width, label=n)
    ax.set_xticks(range(len(runs)), labels, fontsize=8)
    lo = min(100 * x["test"][n]["accuracy"] for x in runs for n in ("teacher", "student", "baseline"))
    ax.set_ylim(max(0, lo - 10), 100)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("compress: teacher, 3-layer student, labels-only baseline")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_docs(results: dict, doc: Path = DOC, plot_path: Path = PLOT) -> None:
    doc.write_text(markdown(results))
    if results["runs"]:
        plot(results, plot_path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=["source", "sentiment5", "same_source", "movies"],
                   choices=list(TASKS))
    p.add_argument("--seeds", nargs="+", type=int, default=[42])
    p.add_argument("--variant", choices=list(VARIANTS), default="defaults")
    p.add_argument("--work", type=Path, default=ROOT / "artifacts" / "evidence")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--docs-only", action="store_true", help="rewrite docs/compress.md and the plot from the results")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[evidence] %(message)s")
    results = json.loads(args.results.read_text()) if args.results.is_file() else {"runs": []}
    if args.docs_only:  # runs still under way (or stopped) in the work folder: what they recorded so far
        done = {f"{x['task']}-{x['variant']}-s{x['seed']}" for x in results["runs"]}
        results["unfinished"] = {d.name: progress_of(d) for d in sorted((args.work / "runs").glob("*-s*"))
                                 if d.is_dir() and d.name not in done and not (d / "report.json").is_file()}
    else:
        from lab.assets import fetch
        from lab.environment import capture

        base = fetch("minilm")
        write_tasks(args.work / "tasks", args.tasks)
        results["machine"] = {k: v for k, v in capture().items() if k in ("cpu", "cores", "torch", "python")}
        for task in args.tasks:
            for seed in args.seeds:
                row = run_one(task, seed, args.variant, args.work, base)
                results = merge(results, row)
                args.results.write_text(json.dumps(results, indent=1) + "\n")  # after every run: partial evidence
                write_docs(results)
                log.info("%s seed %d: teacher %s, student %s, baseline %s, retention %s, %.1f min", task, seed,
                         *(_pct(row["test"][n]["accuracy"]) for n in ("teacher", "student", "baseline")),
                         _pct(row["test"]["student"]["retention"]), row["wall_minutes"])
    write_docs(results)
    print(summary_line(results))


if __name__ == "__main__":
    main()
