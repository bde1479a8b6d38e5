"""Loaders for the real data: the movie-review sentiment set and the news corpus.

Splits are deterministic functions of each record's id (SHA-256), so every machine gets
the same train/dev/test and the same held-out news articles.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

csv.field_size_limit(1 << 24)

SENTIMENT_FILE = "movieReviewSnippets_GroundTruth.txt"
OOD_FILES = {"tweets": "tweets_GroundTruth.txt", "nyt": "nytEditorialSnippets_GroundTruth.txt"}
NEWS_FILE = "NewsArticles.csv"
LABELS = {0: "negative", 1: "positive"}


def bucket(key: str, n: int = 10) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % n


def split_of(key: str) -> str:
    """80/10/10 by hash of the id."""
    b = bucket(key)
    return "train" if b < 8 else ("dev" if b == 8 else "test")


def ground_truth_rows(path: Path) -> Iterator[tuple[str, float, list[str]]]:
    """(id, score, the text's cells) of each row of a ground-truth TSV (id, sentiment, text), its header
    checked; a text holding tabs spans several cells."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows)
        if [h.strip() for h in header[:3]] != ["id", "sentiment", "text"]:
            raise ValueError(f"{path}: unexpected header {header}")
        for row in rows:
            if len(row) >= 3:
                yield row[0].strip(), float(row[1]), row[2:]


def read_ground_truth(path: Path) -> list[tuple[str, str, int]]:
    """(id, text, label) rows of a ground-truth TSV (id, sentiment, text): score > 0 positive (1),
    < 0 negative (0), 0 dropped."""
    out = []
    for rid, score, cells in ground_truth_rows(path):
        text = "\t".join(cells).strip()
        if score != 0 and text:
            out.append((rid, text, 1 if score > 0 else 0))
    return out


def load_sentiment(folder: str | Path) -> dict[str, list[tuple[str, int]]]:
    """{split: [(text, label)]} of the movie-review snippets, 80/10/10 by id."""
    out: dict[str, list[tuple[str, int]]] = {"train": [], "dev": [], "test": []}
    for rid, text, label in read_ground_truth(Path(folder) / SENTIMENT_FILE):
        out[split_of(rid)].append((text, label))
    return out


def load_ood(folder: str | Path) -> dict[str, dict[str, list[tuple[str, int]]]]:
    """{domain: {"dev" | "test": [(text, label)]}} for the out-of-domain sets, halved by a hash of
    the domain and id. Never trained on: the dev halves take part in model selection only."""
    out = {}
    for domain, name in OOD_FILES.items():
        halves: dict[str, list[tuple[str, int]]] = {"dev": [], "test": []}
        for rid, text, label in read_ground_truth(Path(folder) / name):
            halves["dev" if bucket(f"{domain}:{rid}", 2) == 0 else "test"].append((text, label))
        out[domain] = halves
    return out


def write_splits(data: dict[str, list[tuple[str, int]]], out_dir: str | Path) -> dict[str, Path]:
    """TSV files (text, label name) that ``python -m training finetune`` reads."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in data.items():
        buf = io.StringIO(newline="")
        w = csv.writer(buf, delimiter="\t")
        w.writerow(["text", "label"])
        w.writerows((t, LABELS[y]) for t, y in rows)
        paths[split] = write_atomic(out_dir / f"{split}.tsv", buf.getvalue())
    return paths


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` unless the file already holds it, through a temporary file and a rename, so a
    process reading it meanwhile (``make models`` and ``make ablation`` share a work folder) never
    sees half a file."""
    if path.is_file() and path.read_bytes() == text.encode("utf-8"):
        return path
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8", newline="")
    os.replace(tmp, path)
    return path


_SENT_END = re.compile(r"(?<=[.!?])\s+(?=[\"'A-Z0-9])")


def cut_sentences(paragraph: str) -> list[str]:
    """The sentences of a news paragraph, ending punctuation kept, of 30 to 300 characters: how the
    held-out sentences are cut, and the embedder's training sentences with them."""
    return [s for s in _SENT_END.split(paragraph) if 30 <= len(s) <= 300]


def load_news(folder: str | Path) -> dict[str, list[str]]:
    """{"train": paragraphs, "heldout": sentences}: 95/5 split by article id."""
    path = Path(folder) / NEWS_FILE
    train, held = [], []
    with path.open(encoding="utf-8", newline="") as f:
        for rec in csv.DictReader(f):
            text = " ".join(p for p in (rec.get("title"), rec.get("subtitle")) if p) + "\n" + (rec.get("text") or "")
            paragraphs = [re.sub(r"\s+", " ", p).strip() for p in text.split("\n")]
            paragraphs = [p for p in paragraphs if len(p) > 40]
            if bucket("news:" + rec["article_id"], 20) == 0:
                for p in paragraphs:
                    held += cut_sentences(p)
            else:
                train += paragraphs
    return {"train": train, "heldout": held}


def main(argv: list[str] | None = None) -> None:
    """``python -m lab.datasets --out data``: the real data as plain files for the CLI.

    Writes data/sentiment/{train,dev,test}.tsv (text, label) and data/news.txt (one paragraph
    per line) and data/news_heldout.txt (held-out sentences).
    """
    import argparse

    from .assets import fetch

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--out", type=Path, default=Path("data"))
    args = p.parse_args(argv)
    paths = write_splits(load_sentiment(fetch("sentiment")), args.out / "sentiment")
    news = load_news(fetch("news"))
    (args.out / "news.txt").write_text("\n".join(news["train"]) + "\n")
    (args.out / "news_heldout.txt").write_text("\n".join(news["heldout"]) + "\n")
    for split, path in paths.items():
        print(f"{split}: {path}")
    print(f"news: {args.out / 'news.txt'} ({len(news['train'])} paragraphs), "
          f"{args.out / 'news_heldout.txt'} ({len(news['heldout'])} sentences)")


if __name__ == "__main__":
    main()
