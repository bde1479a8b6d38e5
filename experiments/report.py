"""Results report, generated from artifacts/results.json (never typed by hand):
a Markdown table in the style of the paper's Tables 1 and 3, written into the README
between markers, and a PNG chart of accuracy against CPU latency.

    python -m experiments.report [--results artifacts/results.json] [--readme README.md]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

START, END = "<!-- results:start -->", "<!-- results:end -->"
NAMES = {"teacher": "Teacher: all-MiniLM-L6-v2 (BERT, 6 layers) fine-tuned",
         "student": "Student: DistilBERT, 3 layers, distilled",
         "baseline": "Baseline: same student, labels only"}


def markdown(res: dict) -> str:
    m = res["models"]
    t = m["teacher"]
    lines = [
        f"Measured by `make models` on {res['created']} ({res['machine']['device']}, {res['machine']['cpu']}, "
        f"{res['machine']['threads']} threads, torch {res['machine']['torch']}); total "
        f"{res['timings_s']['total'] / 60:.1f} min. Test split: {res['data']['test']} movie-review snippets.",
        "",
        "| model | parameters | test accuracy | macro F1 | % of teacher accuracy | agreement with teacher "
        "| CPU latency, batch 1 (ms) | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("teacher", "student", "baseline"):
        r = m[name]
        retention = f"{100 * r['retention']:.1f}%" if "retention" in r else "100%"
        agree = f"{100 * r['teacher_agreement']:.1f}%" if "teacher_agreement" in r else "–"
        speed = f"{r['speedup_b1']:.2f}×" if "speedup_b1" in r else "1.00×"
        lines.append(f"| {NAMES[name]} | {r['parameters'] / 1e6:.1f}M ({100 * r['parameters'] / t['parameters']:.0f}%) "
                     f"| {100 * r['accuracy']:.2f}% | {100 * r['macro_f1']:.2f}% | {retention} | {agree} "
                     f"| {r['latency_ms_b1']:.2f} | {speed} |")
    e = res["embeddings"]
    lines += [
        "",
        f"Sentence embeddings on {e['student_vs_teacher']['n']} held-out news sentences (mean pooling, normalised):",
        "",
        "| pair | mean cosine | top-1 neighbour agreement |",
        "|---|---:|---:|",
    ]
    labels = {"student_vs_teacher": "served student vs served teacher",
              "student_vs_minilm": "served student vs original all-MiniLM-L6-v2",
              "teacher_vs_minilm": "served teacher vs original all-MiniLM-L6-v2",
              "general_student_vs_minilm": "general-distilled student (before task distillation) vs original"}
    for k, label in labels.items():
        if k in e:
            lines.append(f"| {label} | {e[k]['mean_cosine']:.3f} | {100 * e[k]['top1_agreement']:.1f}% |")
    kd = res.get("task_distillation_dev", {})
    if kd:
        lines += ["", "Task distillation on dev (unlabeled news augmentation measured, the better one kept): "
                  + ", ".join(f"{k} {100 * v:.2f}%" for k, v in kd.items())
                  + f" → kept **{res['task_distillation_choice']}**."]
    tg = res["targets"]
    lines += ["", "Targets: " + ", ".join(f"{k.replace('_', ' ')} {'✅' if v else '❌'}" for k, v in tg.items()) + ".",
              "", "![accuracy vs latency](docs/accuracy_vs_latency.png)"]
    return "\n".join(lines)


def plot(res: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    colors = {"teacher": "tab:blue", "student": "tab:orange", "baseline": "tab:gray"}
    for name, r in res["models"].items():
        ax.scatter(r["latency_ms_b1"], 100 * r["accuracy"], s=r["parameters"] / 1e5, color=colors.get(name),
                   alpha=0.8, label=f"{name} ({r['layers']} layers, {r['parameters'] / 1e6:.1f}M)")
        ax.annotate(name, (r["latency_ms_b1"], 100 * r["accuracy"]), textcoords="offset points", xytext=(8, 6))
    ax.set_xlabel("CPU latency at batch 1 (ms, median)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Movie-review sentiment: accuracy vs latency")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    xs = [r["latency_ms_b1"] for r in res["models"].values()]
    ax.set_xlim(0, max(xs) * 1.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def write_readme(readme: Path, block: str) -> None:
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no {START} ... {END} markers")
    new = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: f"{START}\n{block}\n{END}", text, flags=re.S)
    readme.write_text(new)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=Path("artifacts/results.json"))
    p.add_argument("--readme", type=Path, default=Path("README.md"))
    p.add_argument("--plot", type=Path, default=Path("docs/accuracy_vs_latency.png"))
    args = p.parse_args(argv)
    res = json.loads(args.results.read_text())
    block = markdown(res)
    plot(res, args.plot)
    write_readme(args.readme, block)
    print(block)


if __name__ == "__main__":
    main()
