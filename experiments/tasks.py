"""More than one task to choose ``compress``'s defaults on, made from the data the assets already pin
(the three ground-truth corpora of Hutto & Gilbert, ICWSM 2014: movie-review snippets, tweets, New York
Times editorial snippets, each text with a mean human sentiment score from -4 to 4). No new data.

    python -m experiments.tasks --out data/tasks        (writes <task>/{train,dev,test}.csv)

Tasks (every choice a function of each record's id, so every machine writes the same bytes):

- ``movies``: the movie-review snippets, negative / positive (``make models``' task), a few thousand
  training rows drawn by hash.
- ``source``: which corpus a snippet comes from (movie / tweet / nyt), the NYT editorial snippets cut to
  a rare label (about 5% of every split), as in the issue's outside check ("a rare label").
- ``sentiment5``: the sentiment score binned into five classes across the three corpora (<= -2, -2..-0.5,
  -0.5..0.5, 0.5..2, >= 2); the bins are as unbalanced as the corpora make them.
- ``same_source``: sentence pairs, "do these two snippets come from the same corpus". Its limits: a model
  can solve it by classifying each text alone and comparing, so it checks that pairs and their segment
  ids travel through ``compress``, not that a model relates two sentences; half the pairs are "same".

Splits: 70/10/20 by a hash of the record's id (the NYT snippets by their article, so no article's
sentences straddle two splits; the pairs by their first text's), so test sets are large enough to tell a
point apart. Limits of all: one study's annotation, short English texts, the same three sources.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
from collections import Counter
from pathlib import Path

from lab.datasets import OOD_FILES, SENTIMENT_FILE, ground_truth_rows, write_atomic

CORPORA = {"movie": ("sentiment", SENTIMENT_FILE), "tweet": ("sentiment_ood", OOD_FILES["tweets"]),
           "nyt": ("sentiment_ood", OOD_FILES["nyt"])}
SPLITS = ("train", "dev", "test")
BINS = ((-2.0, "very negative"), (-0.5, "negative"), (0.5, "neutral"), (2.0, "positive"))  # upper bounds


def _h(key: str) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:12], 16)


def split_of(key: str) -> str:
    """70/10/20 by hash."""
    b = _h("split:" + key) % 10
    return "train" if b < 7 else ("dev" if b == 7 else "test")


def read_scored(path: Path) -> list[tuple[str, float, str]]:
    """(id, score, text) rows of a ground-truth TSV (id, sentiment, text); zero scores kept."""
    out = []
    for rid, score, cells in ground_truth_rows(path):
        if text := " ".join("\t".join(cells).split()):
            out.append((rid, score, text))
    return out


def load_corpora(folders: dict[str, Path]) -> dict[str, list[dict]]:
    """{corpus: [{"id", "group", "score", "text"}]}; ``group`` is what the split hashes (the NYT
    snippet's article)."""
    out = {}
    for corpus, (asset, name) in CORPORA.items():
        rows = []
        for rid, score, text in read_scored(Path(folders[asset]) / name):
            group = f"{corpus}:{rid.split('_')[0] if corpus == 'nyt' else rid}"
            rows.append({"id": f"{corpus}:{rid}", "group": group, "score": score, "text": text})
        out[corpus] = rows
    return out


def _first(rows: list[dict], n: int, salt: str) -> list[dict]:
    """The ``n`` rows first in hash order (a deterministic sample)."""
    return sorted(rows, key=lambda r: _h(salt + r["id"]))[:n]


def sentiment_bin(score: float) -> str:
    for upper, name in BINS:
        if score <= upper if upper < 0 else score < upper:
            return name
    return "very positive"


def _split(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for r in sorted(rows, key=lambda r: _h("order:" + r["id"])):
        out[split_of(r["group"])].append(r)
    return out


def movies(c: dict[str, list[dict]], n: int = 4600) -> dict[str, list[dict]]:
    rows = [r for r in c["movie"] if r["score"] != 0]
    return _split([{**r, "label": "positive" if r["score"] > 0 else "negative"} for r in _first(rows, n, "movies")])


def source(c: dict[str, list[dict]], common: int = 2200, rare: int = 220) -> dict[str, list[dict]]:
    rows = []
    for corpus, n in (("movie", common), ("tweet", common), ("nyt", rare)):
        rows += [{**r, "label": corpus} for r in _first(c[corpus], n, "source")]
    return _split(rows)


def sentiment5(c: dict[str, list[dict]], per_corpus: int = 1700) -> dict[str, list[dict]]:
    rows = []
    for corpus in CORPORA:
        rows += [{**r, "label": sentiment_bin(r["score"])} for r in _first(c[corpus], per_corpus, "sentiment5")]
    return _split(rows)


def same_source(c: dict[str, list[dict]], per_corpus: int = 1500) -> dict[str, list[dict]]:
    """Each text paired with a partner from its own split: from its own corpus for one text in two (by
    hash), from another corpus otherwise; a text is a first text once."""
    pool = {corpus: _split(_first(c[corpus], per_corpus, "pairs")) for corpus in CORPORA}
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    names = list(CORPORA)
    for split in SPLITS:
        for corpus in names:
            for r in pool[corpus][split]:
                same = _h("same:" + r["id"]) % 2 == 0
                other = corpus if same else names[(names.index(corpus) + 1 + _h("which:" + r["id"]) % 2) % 3]
                partners = pool[other][split]
                p = partners[_h("partner:" + r["id"]) % len(partners)]
                if p["id"] == r["id"]:
                    p = partners[(partners.index(p) + 1) % len(partners)]
                out[split].append({**r, "text_pair": p["text"], "label": "same" if same else "different"})
        out[split].sort(key=lambda r: _h("order:" + r["id"]))
    return out


TASKS = {"movies": movies, "source": source, "sentiment5": sentiment5, "same_source": same_source}
PAIR_TASKS = {"same_source"}


def write_task(splits: dict[str, list[dict]], folder: Path) -> dict:
    """{split}.csv (text[, text_pair], label) and task.json (rows and label counts per split)."""
    folder.mkdir(parents=True, exist_ok=True)
    pair = "text_pair" in splits["train"][0]
    columns = ["text", "text_pair", "label"] if pair else ["text", "label"]
    info = {"columns": columns, "splits": {}}
    for split, rows in splits.items():
        buf = io.StringIO(newline="")
        w = csv.writer(buf)
        w.writerow(columns)
        w.writerows([r[c] for c in columns] for r in rows)
        write_atomic(folder / f"{split}.csv", buf.getvalue())
        info["splits"][split] = {"rows": len(rows), "labels": dict(sorted(Counter(r["label"] for r in rows).items()))}
    write_atomic(folder / "task.json", json.dumps(info, indent=1) + "\n")
    return info


def write_tasks(out: Path, names: list[str] | None = None, folders: dict[str, Path] | None = None) -> dict[str, dict]:
    if folders is None:
        from lab.assets import fetch

        folders = {a: fetch(a) for a in ("sentiment", "sentiment_ood")}
    corpora = load_corpora(folders)
    return {n: write_task(TASKS[n](corpora), out / n) for n in (names or list(TASKS))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("data/tasks"))
    p.add_argument("tasks", nargs="*", help=f"some of {', '.join(TASKS)} (default: all)")
    args = p.parse_args(argv)
    if unknown := set(args.tasks) - set(TASKS):
        p.error(f"unknown task(s) {sorted(unknown)}; known: {', '.join(TASKS)}")
    for name, info in write_tasks(args.out, args.tasks or None).items():
        print(name, json.dumps(info["splits"]))


if __name__ == "__main__":
    main()
