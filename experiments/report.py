"""Results report, generated from artifacts/results.json (never typed by hand):
a Markdown table in the style of the paper's Tables 1 and 3, written into the README
between markers, and a PNG chart of accuracy against CPU latency.

    python -m experiments.report [--results artifacts/results.json] [--readme README.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lab.readme import write_section

NAMES = {"teacher": "Teacher: all-MiniLM-L6-v2 (BERT, 6 layers) fine-tuned",
         "student": "Student: DistilBERT, 3 layers, distilled",
         "baseline": "Baseline: same student, labels only"}
DOMAINS = {"movies": "movie reviews (in-domain)", "tweets": "tweets", "nyt": "NYT editorials"}
EMBEDDINGS = {
    "student_embedder_vs_teacher_embedder": "served student embedder vs served teacher embedder",
    "teacher_embedder_vs_minilm": "served teacher embedder vs original all-MiniLM-L6-v2",
    "student_classifier_vs_teacher_classifier": "student classifier vs teacher classifier (one checkpoint for both?)",
    "teacher_classifier_vs_minilm": "teacher classifier vs original all-MiniLM-L6-v2",
}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _cell(r: dict, domain: str) -> str:
    """Accuracy on one domain (or the out-of-domain mean) and, for a student, its retention."""
    acc = r["domains"][domain]["accuracy"] if domain != "ood_mean" else r["accuracy_ood_mean"]
    key = f"retention_{domain}"
    return f"{100 * acc:.2f}%" + (f" ({_pct(r[key])} of teacher)" if key in r else "")


def seed_noise(ablation: dict) -> dict[str, float]:
    """The seed noise make ablation measured on the test splits: per metric, the largest std over its
    rows run with several seeds."""
    multi = [r for r in ablation["rows"] if len(r["seeds"]) > 1]
    return {k: max(r["test"][k]["std"] for r in multi) for k in ("accuracy_movies", "accuracy_ood_mean")}


def versus_baseline(res: dict, noise: dict[str, float] | None) -> str:
    s, b = res["models"]["student"], res["models"]["baseline"]
    gaps = {"accuracy_movies": s["accuracy"] - b["accuracy"],
            "accuracy_ood_mean": s["accuracy_ood_mean"] - b["accuracy_ood_mean"]}
    per_set = [d for d in s["domains"] if d != "movies"]
    text = (f"Student minus baseline: {100 * gaps['accuracy_movies']:+.1f} points in-domain, "
            f"{100 * gaps['accuracy_ood_mean']:+.1f} out-of-domain ("
            + ", ".join(f"{DOMAINS.get(d, d)} {100 * (s['domains'][d]['accuracy'] - b['domains'][d]['accuracy']):+.1f}"
                        for d in per_set) + ")")
    if noise is None:
        return text + " (no docs/ablation.json: seed noise unknown)."
    beyond = all(gaps[k] > noise[k] for k in gaps)
    return (text + f"; the seed std make ablation measured (docs/ablation.json, three seeds) is "
            f"{100 * noise['accuracy_movies']:.1f} / {100 * noise['accuracy_ood_mean']:.1f} points: "
            f"{'above it on both ✅' if beyond else 'not above it on both ❌'}.")


def markdown(res: dict, noise: dict[str, float] | None = None) -> str:
    m = res["models"]
    t = m["teacher"]
    d = res["data"]
    machine = res["machine"]
    lines = [
        f"Measured by `make models` on {res['created']} ({machine['device']}, {machine['cpu']}, {machine['threads']} "
        f"threads, torch {machine['torch']}); {_minutes(res)}. Test splits: "
        f"{d['test_movies']} movie-review snippets (in-domain), {d['test_tweets']} tweets and {d['test_nyt']} NYT "
        "editorial snippets (out-of-domain halves, never trained on).",
        "",
        "| model | parameters | movie reviews (in-domain) | tweets | NYT editorials | out-of-domain mean "
        "| agreement with teacher | CPU latency, batch 1 (ms) | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("teacher", "student", "baseline"):
        r = m[name]

        agree = _pct(r["teacher_agreement"]) if "teacher_agreement" in r else "–"
        speed = f"{r['speedup_b1']:.2f}×" if "speedup_b1" in r else "1.00×"
        lines.append(f"| {NAMES[name]} | {r['parameters'] / 1e6:.1f}M ({100 * r['parameters'] / t['parameters']:.0f}%) "
                     f"| {_cell(r, 'movies')} | {_cell(r, 'tweets')} | {_cell(r, 'nyt')} | {_cell(r, 'ood_mean')} "
                     f"| {agree} "
                     f"| {r['latency_ms_b1']:.2f} | {speed} |")
    lines += ["", versus_baseline(res, noise)]
    lines += ["", selection_line(res)]
    e = res["embeddings"]
    lines += [
        "",
        f"Sentence embeddings on {e['student_embedder_vs_teacher_embedder']['n']} held-out news sentences (mean "
        "pooling, normalised). `/embed` serves the embedders; `/classify` the classifiers (artifacts/serve.json):",
        "",
        "| pair | mean cosine | top-1 neighbour agreement |",
        "|---|---:|---:|",
    ]
    for k, label in EMBEDDINGS.items():
        if k in e:
            lines.append(f"| {label} | {e[k]['mean_cosine']:.3f} | {_pct(e[k]['top1_agreement'])} |")
    if "embedders" in e:
        st, te = e["embedders"]["student_embedder"], e["embedders"]["teacher_embedder"]
        lines += ["", f"The student embedder has {st['layers']} layers ({st['parameters'] / 1e6:.1f}M parameters), "
                  f"the teacher embedder {te['layers']} ({te['parameters'] / 1e6:.1f}M): batch-1 CPU latency "
                  f"{st['latency_ms_b1']:.2f} ms against {te['latency_ms_b1']:.2f} ms, "
                  f"{st['speedup_b1']:.2f}× faster (same inputs and thread as the table above)."]
    tg = res["targets"]
    lines += ["", "Targets: " + ", ".join(f"{k.replace('_', ' ')} {'✅' if v else '❌'}" for k, v in tg.items()) + ".",
              "", "![accuracy vs latency](docs/accuracy_vs_latency.png)"]
    return "\n".join(lines)


def selection_line(res: dict) -> str:
    """What compress chose on the dev splits (every domain's, pooled), and the command it ran."""
    sel, c = res["selection"], res["compress"]
    t, st, b = sel["chosen"]["teacher"], sel["chosen"]["student"], sel["chosen"]["baseline"]

    def kept(x: dict) -> str:
        k = x["kept"]
        return f"epoch {k['epoch']:g} of {x['evaluated'][-1]['epoch']:g} (dev {100 * k['accuracy']:.1f}%)"

    extra = c["data"]["extra_text"]
    return ("The classifiers are one `python -m training compress` run (the recipe users run on their own data; "
            "[docs/distillation.md](docs/distillation.md)): `" + c["command"].replace(str(Path.cwd()) + "/", "")
            + "`. It fine-tuned the teacher, distilled the student on the training snippets plus "
            f"{extra['perturbed_copies']} perturbed copies and {extra['unlabeled']} news sentences scored by the "
            "teacher, and trained the baseline for as many steps on the labels alone; each kept its best epoch on "
            "the dev splits (" + ", ".join(DOMAINS.get(x, x) for x in sel["on"]) + ", pooled): teacher at lr "
            f"{t['lr']:g}, epoch {t['epoch']:g} (dev {100 * t['dev']['accuracy']:.1f}%); student {kept(st)}; "
            f"baseline {kept(b)}.")


def _minutes(res: dict) -> str:
    """make models' wall time: the pipeline, and the variants step when it ran after it."""
    pipeline = res["timings_s"]["total"] / 60
    cpu = res["timings_s"].get("cpu")
    text = f"the pipeline took {pipeline:.1f} min"
    if cpu:
        text += f" ({cpu / 60:.0f} CPU-minutes over every process)"
    if (variants := res.get("variants", {}).get("seconds")) is not None:
        text = f"total {pipeline + variants / 60:.1f} min: {text}, the variants step {variants / 60:.1f} min"
    return text


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
    ax.set_ylabel("in-domain test accuracy (%)")
    ax.set_title("Movie-review sentiment: accuracy vs latency")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    xs = [r["latency_ms_b1"] for r in res["models"].values()]
    ax.set_xlim(0, max(xs) * 1.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=Path("artifacts/results.json"))
    p.add_argument("--readme", type=Path, default=Path("README.md"))
    p.add_argument("--plot", type=Path, default=Path("docs/accuracy_vs_latency.png"))
    p.add_argument("--ablation", type=Path, default=Path("docs/ablation.json"),
                   help="make ablation's results: the seed noise the student-vs-baseline gap is held to")
    args = p.parse_args(argv)
    res = json.loads(args.results.read_text())
    noise = seed_noise(json.loads(args.ablation.read_text())) if args.ablation.is_file() else None
    block = markdown(res, noise)
    plot(res, args.plot)
    write_section(args.readme, "results", block)
    print(block)


if __name__ == "__main__":
    main()
