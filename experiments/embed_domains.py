"""The student embedder on every domain the assets pin: ``python -m training compress task=embed`` with
all-MiniLM-L6-v2 as the teacher, trained on text of all four domains and measured per domain on held-out
text (docs/embedder.md, written from docs/embedder.json).

    python -m experiments.embed_domains --out artifacts/embed_domains [--steps 900]

Training text: news sentences (training articles), the movie-review snippets' training split, and the
dev halves of the tweets and NYT editorial snippets. Held out, per domain (at most 1,000 each, the pool
the nearest neighbours are found in, as in make models): the news sentences of held-out articles, the
movie reviews' test split, and the tweets' and editorials' test halves: the sets make models measures on.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import random
from pathlib import Path

from lab.assets import fetch
from lab.datasets import cut_sentences, load_news, load_ood, load_sentiment, write_atomic
from training.compress_embed import EmbedCompressConfig, run_compress_embed

ROOT = Path(__file__).resolve().parents[1]
NEWS_SENTENCES = 12_000  # news is the largest domain by far: capped so it does not drown the others
N_HELDOUT = 1000


def write_corpus(out: Path, seed: int = 0) -> tuple[Path, Path]:
    """corpus.csv and heldout.csv: (text, source) rows."""
    movie, ood, news = load_sentiment(fetch("sentiment")), load_ood(fetch("sentiment_ood")), load_news(fetch("news"))
    rng = random.Random(seed)
    news_train = [s for p in news["train"] for s in cut_sentences(p)]
    train = {"news": rng.sample(news_train, min(NEWS_SENTENCES, len(news_train))),
             "movie_reviews": [t for t, _ in movie["train"]],
             **{d: [t for t, _ in halves["dev"]] for d, halves in ood.items()}}
    held = {"news": news["heldout"][:N_HELDOUT], "movie_reviews": [t for t, _ in movie["test"]][:N_HELDOUT],
            **{d: [t for t, _ in halves["test"]][:N_HELDOUT] for d, halves in ood.items()}}
    paths = []
    for name, rows in (("corpus", train), ("heldout", held)):
        lines = [["text", "source"]] + [[t.replace("\n", " "), d] for d, ts in rows.items() for t in ts]
        path = out / f"{name}.csv"
        out.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".tmp"), "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(lines)
        path.with_suffix(".tmp").replace(path)
        paths.append(path)
    return paths[0], paths[1]


def docs_page(report: dict) -> str:
    s, t = report["models"]["student"], report["models"]["teacher"]
    lines = ["# The student embedder, domain by domain", "",
             "Written by `python -m experiments.embed_domains` from `docs/embedder.json`; do not edit by hand.", "",
             f"`python -m training compress task=embed`, teacher all-MiniLM-L6-v2 ({t['layers']} layers), "
             f"student {s['layers']} layers, {report['budget']['steps']} steps of {report['budget']['batch_size']}, "
             f"trained on {report['data']['training_texts']:,} texts of the four domains "
             "(news sentences, the movie reviews' training split, the tweets' and editorials' dev halves); "
             f"measured on held-out text ({report['held_out']}), run {report['created']}.", "",
             "| domain | held-out texts | mean cosine | top-1 neighbour agreement | target |",
             "|---|---:|---:|---:|---|"]
    for d, m in report["domains"].items():
        ok = m["top1_agreement"] >= 0.70 and m["mean_cosine"] >= 0.95
        lines.append(f"| {d} | {m['n']} | {m['mean_cosine']:.3f} | {100 * m['top1_agreement']:.1f}% | "
                     f"{'✅' if ok else '❌'} (≥ 70%, ≥ 0.95) |")
    lines += ["", f"Batch-1 CPU latency: student {s['latency_ms_b1']:.2f} ms, teacher {t['latency_ms_b1']:.2f} ms "
              f"({s['speedup_b1']:.2f}x); {s['parameters']:,} parameters against {t['parameters']:,}. "
              f"Wall time {report['wall_time_s'] / 60:.1f} min.", "", "![agreement by domain](embedder.png)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="artifacts/embed_domains")
    p.add_argument("--steps", type=int, default=EmbedCompressConfig.steps)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--docs", default=str(ROOT / "docs"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out = Path(args.out)
    corpus, held = write_corpus(out / "data")
    report = run_compress_embed(EmbedCompressConfig(
        teacher=str(fetch("minilm")), corpus=str(corpus), test_file=str(held), domain_column="source",
        out_dir=str(out), steps=args.steps, threads=args.threads, progress=False))
    docs = Path(args.docs)
    write_atomic(docs / "embedder.json", json.dumps(report, indent=1) + "\n")
    (docs / "embedder.png").write_bytes((out / "agreement.png").read_bytes())
    write_atomic(docs / "embedder.md", docs_page(report))


if __name__ == "__main__":
    main()
