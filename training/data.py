"""Data: raw-text corpora chunked to the max length, labeled classification files,
and length-grouped batching so padding stays small.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

import model
from model.tokenizer import pad_rows

from .trainer import Batch


def read_texts(path: str | Path, column: str = "text") -> list[str]:
    """One text per line (.txt), or a column of a .csv/.tsv/.jsonl file."""
    path = Path(path)
    if path.suffix in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8") as f:
            rows = csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")
            if column not in (rows.fieldnames or []):
                raise ValueError(f"{path}: no column {column!r}; columns are {rows.fieldnames}")
            return [r[column] for r in rows if (r[column] or "").strip()]
    if path.suffix == ".jsonl":
        out = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                rec = json.loads(line)
                if column not in rec:
                    raise ValueError(f"{path}:{i + 1}: no field {column!r}")
                out.append(rec[column])
        return [t for t in out if t.strip()]
    return [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


@dataclass
class Labeled:
    texts: list[str]
    labels: list[int]
    id2label: dict[int, str]


def read_labeled(path: str | Path, text_column: str = "text", label_column: str = "label",
                 id2label: dict[int, str] | None = None) -> Labeled:
    """A classification file (.csv/.tsv/.jsonl). Labels may be names or integer ids."""
    path = Path(path)
    if path.suffix == ".jsonl":
        rows = [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    elif path.suffix in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ","))
    else:
        raise ValueError(f"{path}: labeled data must be .csv, .tsv or .jsonl")
    if rows and (text_column not in rows[0] or label_column not in rows[0]):
        raise ValueError(f"{path}: needs columns {text_column!r} and {label_column!r}; has {list(rows[0])}")
    raw = [str(r[label_column]) for r in rows]
    if id2label is None:
        def order(x: str) -> tuple:
            numeric = x.lstrip("-").isdigit()
            return (not numeric, int(x) if numeric else 0, x)

        names = sorted(set(raw), key=order)
        id2label = dict(enumerate(names))
    label2id = {v: k for k, v in id2label.items()}
    labels = []
    for i, lab in enumerate(raw):
        if lab in label2id:
            labels.append(label2id[lab])
        elif lab.isdigit() and int(lab) in id2label:
            labels.append(int(lab))
        else:
            raise ValueError(f"{path}: row {i + 1} has label {lab!r}, not one of {sorted(label2id)}")
    return Labeled([str(r[text_column]) for r in rows], labels, id2label)


def chunk_corpus(tokenizer: model.Tokenizer, texts: list[str], max_length: int,
                 min_length: int = 8) -> list[list[int]]:
    """Tokenize documents and cut them into [CLS] ... [SEP] sequences of at most max_length."""
    body = max_length - 2
    out = []
    for ids in tokenizer.tokenize_ids(texts):
        inner = ids[1:-1]
        for i in range(0, len(inner), body):
            piece = inner[i:i + body]
            if len(piece) + 2 >= min_length:
                out.append([tokenizer.cls_id, *piece, tokenizer.sep_id])
    return out


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int, epoch: int = 0,
                           group: int = 50) -> list[list[int]]:
    """Shuffle, sort within windows of batch_size*group by length, cut batches, shuffle batches.

    Deterministic in (seed, epoch), so a resumed run sees the same order.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    window = batch_size * group
    batches = []
    for w in range(0, len(idx), window):
        part = sorted(idx[w:w + window], key=lambda i: lengths[i])
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def padding_fraction(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of padded positions over all batches: what length grouping saves."""
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1 - sum(lengths) / padded if padded else 0.0


def collate(seqs: list[list[int]], pad_id: int, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of sequences cut to max_length and right-padded (model/tokenizer.py's padding)."""
    batch = pad_rows(seqs, pad_id, max_length)
    return batch.input_ids, batch.attention_mask


class TokenStates:
    """Per-token tensors of every sequence, kept ragged (no padding stored): the rows of all sequences
    in one (sum of lengths, ...) block, half precision, with each sequence's offset. A teacher's hidden
    states for some 20,000 texts fit in about a gigabyte this way; padded to the maximum length they
    would take over twice that."""

    def __init__(self, rows: list[torch.Tensor]) -> None:
        self.lengths = [r.shape[0] for r in rows]
        self.offsets = [0]
        for n in self.lengths:
            self.offsets.append(self.offsets[-1] + n)
        self.block = torch.cat(rows).half() if rows else torch.empty(0)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.block[self.offsets[i]:self.offsets[i + 1]].float()

    def padded(self, idx: list[int], length: int) -> torch.Tensor:
        """Sequences ``idx`` zero-padded to ``length`` rows: (B, length, ...)."""
        out = self.block.new_zeros((len(idx), length, *self.block.shape[1:]), dtype=torch.float32)
        for b, i in enumerate(idx):
            n = min(self.lengths[i], length)
            out[b, :n] = self.block[self.offsets[i]:self.offsets[i] + n]
        return out


class SequenceData:
    """Token-id sequences (+ labels, + per-sequence tensors such as cached teacher logits, + per-token
    ones such as cached teacher hidden states) served as length-grouped batches."""

    def __init__(self, seqs: list[list[int]], labels: list[int] | None, pad_id: int, max_length: int,
                 batch_size: int, seed: int, per_sequence: dict[str, torch.Tensor] | None = None,
                 per_token: dict[str, TokenStates] | None = None,
                 token_types: list[list[int]] | None = None) -> None:
        self.seqs, self.labels = [s[:max_length] for s in seqs], labels
        # Segment ids of sentence pairs (a BERT-family model's token_type_ids), one per token; None: one segment.
        self.token_types = [t[:max_length] for t in token_types] if token_types is not None else None
        self.pad_id, self.max_length, self.batch_size, self.seed = pad_id, max_length, batch_size, seed
        self.per_sequence = per_sequence or {}
        self.per_token = per_token or {}
        self.lengths = [len(s) for s in self.seqs]
        for name, states in self.per_token.items():
            if states.lengths != self.lengths:
                raise ValueError(f"{name}: per-token rows do not match the sequences' lengths")

    def batches_for_epoch(self, epoch: int) -> list[list[int]]:
        return length_grouped_batches(self.lengths, self.batch_size, self.seed, epoch)

    def make_batch(self, idx: list[int]) -> Batch:
        ids, mask = collate([self.seqs[i] for i in idx], self.pad_id, self.max_length)
        t = {"input_ids": ids, "attention_mask": mask}
        if self.token_types is not None:
            t["token_type_ids"], _ = collate([self.token_types[i] for i in idx], 0, self.max_length)
        if self.labels is not None:
            t["labels"] = torch.tensor([self.labels[i] for i in idx], dtype=torch.long)
        for name, rows in self.per_sequence.items():
            t[name] = rows[idx]
        for name, states in self.per_token.items():
            t[name] = states.padded(idx, ids.shape[1])
        return Batch(t, tokens=int(mask.sum()))
