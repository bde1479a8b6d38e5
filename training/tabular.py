"""Labeled tables as a person has them: .csv, .tsv or .jsonl files with a text column (and, for
sentence-pair tasks, a second one) and a label column of names or integer ids.

Every problem is found when the file is read, before any training, and raised as a ``ValueError`` that
says what to fix (scikit-learn's ``check_X_y`` manner).
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path

import model

csv.field_size_limit(1 << 24)
FORMATS = (".csv", ".tsv", ".jsonl")


class InputError(ValueError):
    """A problem with what a person gave a command (an option, a file, a model), found before any
    training; the message says what to fix. ``python -m training`` prints it without a traceback."""


@dataclass(frozen=True)
class Table:
    """The rows of one file: texts, the second texts of pairs (None: single texts), raw label strings
    (None: unlabeled text)."""

    source: str  # "train_file=path", for messages
    texts: list[str]
    pairs: list[str] | None
    labels: list[str] | None

    def __len__(self) -> int:
        return len(self.texts)

    def rows(self, idx: list[int]) -> Table:
        return replace(self, texts=[self.texts[i] for i in idx],
                       pairs=[self.pairs[i] for i in idx] if self.pairs is not None else None,
                       labels=[self.labels[i] for i in idx] if self.labels is not None else None)


def _records(path: Path, what: str) -> tuple[list[dict], list[str]]:
    """(rows as dicts, column names) of a .csv/.tsv/.jsonl file."""
    if not path.is_file():
        raise InputError(f"{what}={path}: no such file")
    if path.suffix not in FORMATS:
        raise InputError(f"{what}={path}: want a .csv, .tsv or .jsonl file, got {path.suffix or 'no extension'!r}")
    if path.suffix == ".jsonl":
        rows, columns = [], {}
        for i, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines()):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{what}={path}: line {i + 1} is not JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise InputError(f"{what}={path}: line {i + 1} is not a JSON object")
            rows.append(rec)
            columns.update(dict.fromkeys(rec))
        return rows, list(columns)
    with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark is no column
        reader = csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")
        rows = list(reader)
        return rows, list(reader.fieldnames or [])


def _column(rows: list[dict], columns: list[str], name: str, option: str, where: str) -> list[str]:
    if name not in columns:
        raise InputError(f"{where} has no column {name!r} (its columns: {columns}); "
                         f"name the right one with {option}=")
    values = ["" if r.get(name) is None else str(r[name]) for r in rows]
    empty = [i + 1 for i, v in enumerate(values) if not v.strip()]
    if empty:
        raise InputError(f"{where}: {len(empty)} row(s) have an empty {name!r} (rows {empty[:5]}"
                         f"{' ...' if len(empty) > 5 else ''}); fill or remove them")
    return values


def read_table(path: str | Path, what: str, text_column: str = "text", label_column: str | None = "label",
               pair_column: str | None = None) -> Table:
    """A labeled file (``label_column`` None: unlabeled text). ``what`` names the option it came from."""
    path = Path(path)
    where = f"{what}={path}"
    rows, columns = _records(path, what)
    if not rows:
        raise InputError(f"{where} has no rows{' (only a header)' if columns else ''}: "
                         "give it at least one text" + (" and its label" if label_column else ""))
    texts = _column(rows, columns, text_column, "text_column", where)
    pairs = _column(rows, columns, pair_column, "text_pair_column", where) if pair_column else None
    labels = _column(rows, columns, label_column, "label_column", where) if label_column else None
    return Table(where, texts, pairs, labels)


def dev_bucket(text: str, pair: str | None = None) -> bool:
    """Whether a row belongs to the dev split cut off a training file: sha1(text) mod 10 == 0 (text and
    pair joined by a tab for pairs). Stable across machines and runs, and the same text always lands
    on the same side."""
    key = text if pair is None else f"{text}\t{pair}"
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest(), 16) % 10 == 0


def split_dev(table: Table) -> tuple[Table, Table]:
    """(train, dev) by ``dev_bucket``."""
    pairs = table.pairs or [None] * len(table)
    dev = [i for i in range(len(table)) if dev_bucket(table.texts[i], pairs[i])]
    chosen = set(dev)
    return table.rows([i for i in range(len(table)) if i not in chosen]), table.rows(dev)


def label_order(names: set[str]) -> list[str]:
    """Label names in id order: integer ids by value first, then names alphabetically."""
    def key(x: str) -> tuple:
        numeric = x.lstrip("-").isdigit()
        return (not numeric, int(x) if numeric else 0, x)

    return sorted(names, key=key)


def resolve_labels(table: Table, id2label: dict[int, str]) -> list[int]:
    """Each row's label id under ``id2label``: by name, or as an integer id the model has.
    Raises, naming every label that is neither."""
    assert table.labels is not None
    label2id = {v: k for k, v in id2label.items()}

    def one(lab: str) -> int | None:
        if lab in label2id:
            return label2id[lab]
        if lab.lstrip("-").isdigit() and int(lab) in id2label:
            return int(lab)
        return None

    ids = [one(lab) for lab in table.labels]
    unknown = label_order({lab for lab, i in zip(table.labels, ids, strict=True) if i is None})
    if unknown:
        raise InputError(
            f"{table.source}: label(s) {unknown} are not the teacher's: its id2label is {id2label}. "
            f"Write the labels as these names (or their ids 0..{len(id2label) - 1}), or fine-tune a teacher "
            "on this data with base= instead of teacher=")
    return ids  # type: ignore[return-value]


def encode(tok: model.Tokenizer, table: Table) -> tuple[list[list[int]], list[list[int]] | None]:
    """Token ids with [CLS]/[SEP] (untruncated), and for pairs the segment ids (0: text, 1: pair)."""
    if table.pairs is None:
        return tok.tokenize_ids(table.texts), None
    encs = tok.backend.encode_batch(list(zip(table.texts, table.pairs, strict=True)))
    return [e.ids for e in encs], [e.type_ids for e in encs]


def check_lengths(table: Table, ids: list[list[int]], max_length: int, positions: int) -> int:
    """How many rows ``max_length`` cuts; raises when it cuts every one (the data and the limit do not
    fit together)."""
    cut = sum(len(x) > max_length for x in ids)
    if cut == len(ids):
        longest = max(len(x) for x in ids)
        raise InputError(
            f"{table.source}: all {cut} texts are longer than max_length={max_length} tokens (the longest has "
            f"{longest}), so every one would be cut: raise max_length (the teacher takes up to {positions}) "
            "or check text_column")
    return cut
