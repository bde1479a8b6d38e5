"""Pieces the training commands share: frozen models, classifiers from any checkpoint, the export,
length-grouped sequence data, and batched scoring (predictions, cached teacher outputs)."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import model
from model.pooling import mean_pool

from .config import to_dict
from .data import collate, length_grouped_batches
from .trainer import Batch

log = logging.getLogger("training")


def seed_all(seed: int) -> None:
    """Seed torch and Python's random at a command's start, before any model is built: a new head's
    initial weights come from the process's generator, which a worker process does not start in a fixed
    state (the Trainer seeds again, but only after the model exists)."""
    torch.manual_seed(seed)
    random.seed(seed)


def use_threads(threads: int | None) -> None:
    """The configured torch threads for this process, from the start of a command (a command scores data
    before its Trainer exists; two OpenMP threads on a busy 2-core machine run several times slower than one)."""
    if threads:
        torch.set_num_threads(threads)


class Frozen:
    """A frozen model owned by one training command: eval mode, no gradients, and it follows its
    inputs to their device (moved once, on first use). Not an nn.Module attribute of the trained
    model, so it stays out of its checkpoints and of DDP."""

    def __init__(self, m: nn.Module) -> None:
        self.module = m.eval()
        for p in m.parameters():
            p.requires_grad_(False)

    def on(self, device: torch.device) -> nn.Module:
        if next(self.module.parameters()).device != device:
            self.module.to(device)
        return self.module


def classifier_from(path: str | Path, id2label: dict[int, str]) -> nn.Module:
    """A classifier from any checkpoint: its own head if the labels match, else a new head."""
    base = model.load(path)
    if base.task == "classification" and base.config.id2label == id2label:
        return base
    cfg = base.config.replace(id2label=id2label)
    cls = model.BertForSequenceClassification if cfg.family == "bert" else model.DistilBertForSequenceClassification
    clf = cls(cfg)
    missing, unexpected = clf.encoder.load_state_dict(base.encoder.state_dict(), strict=False)
    if unexpected or any(not k.startswith("pooler.") for k in missing):
        raise ValueError(f"{path}: encoder does not fit a classifier (missing {missing}, unexpected {unexpected})")
    return clf


def maybe_freeze_embeddings(m: nn.Module, freeze: bool) -> None:
    if freeze:
        m.encoder.embeddings.word.weight.requires_grad_(False)


def embedding_reference(path: str | None, alpha: float) -> nn.Module | None:
    if alpha > 0 and not path:
        raise ValueError("alpha_embed > 0 needs embed_reference (a model whose sentence embeddings to keep)")
    return model.load(path) if path and alpha > 0 else None


def export(student: nn.Module, out: Path, tokenizer: model.Tokenizer, cfg: object,
           pooling_from: str | Path | None = None) -> Path:
    model.save(student, out, tokenizer=tokenizer)
    (out / "training_config.json").write_text(json.dumps(to_dict(cfg), indent=2, default=str) + "\n")
    if pooling_from and (Path(pooling_from) / "1_Pooling").is_dir():
        (out / "1_Pooling").mkdir(exist_ok=True)
        src = Path(pooling_from) / "1_Pooling" / "config.json"
        (out / "1_Pooling" / "config.json").write_text(src.read_text())
    log.info("exported %s to %s", type(student).__name__, out)
    return out


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


def logits_of(m: nn.Module, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor | None = None
              ) -> torch.Tensor:
    return m.logits(m.encoder(ids, mask, types)) if types is not None else m(ids, mask)


def pooled_of(m: nn.Module, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor | None = None
              ) -> torch.Tensor:
    return mean_pool(m.encoder(ids, mask, types), mask)


def logits_and_pooled_of(m: nn.Module, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor | None = None
                         ) -> torch.Tensor:
    """A classifier's logits and mean-pooled last layer from one forward, side by side: (B, labels + C)."""
    return _logits_and_pooled(m, m.encoder(ids, mask, types), mask)


def _logits_and_pooled(m: nn.Module, last: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.cat([m.logits(last).float(), mean_pool(last, mask).float()], dim=-1)


def _length_sorted_batches(m: nn.Module, seqs: list[list[int]], pad_id: int, max_length: int, batch_size: int,
                           share: tuple[int, int] = (0, 1), token_types: list[list[int]] | None = None):
    """(indices into seqs, ids, mask) on ``m``'s device, in batches of similar length (less padding);
    with ``token_types``, (indices, ids, mask, token type ids).
    ``share`` (k, n): the k-th of n contiguous runs of those batches; each batch is the one the whole
    pass makes, so shares computed apart give the whole pass's rows bitwise."""
    device = next(m.parameters()).device
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    k, n = share
    if not 0 <= k < n:
        raise ValueError(f"share {share}: want (k, n) with 0 <= k < n")
    starts = range(0, len(order), batch_size)
    for i in starts[k * len(starts) // n:(k + 1) * len(starts) // n]:
        idx = order[i:i + batch_size]
        ids, mask = collate([seqs[j] for j in idx], pad_id, max_length)
        if token_types is None:
            yield idx, ids.to(device), mask.to(device)
        else:
            types, _ = collate([token_types[j] for j in idx], 0, max_length)
            yield idx, ids.to(device), mask.to(device), types.to(device)


@torch.no_grad()
def teacher_targets(m: nn.Module, seqs: list[list[int]], pad_id: int, max_length: int, layers: list[int],
                    batch_size: int = 64) -> tuple[torch.Tensor, TokenStates]:
    """A classifier's logits and mean-pooled last layer (N, labels + C), as ``logits_and_pooled_of``,
    and, from the same forward, the per-token outputs of ``layers`` (0-based, each (T_i, len(layers), C))."""
    m.eval()
    rows: list[torch.Tensor | None] = [None] * len(seqs)
    states: list[torch.Tensor | None] = [None] * len(seqs)
    for idx, ids, mask in _length_sorted_batches(m, seqs, pad_id, max_length, batch_size):
        hidden = m.encoder.hidden_states(ids, mask)  # embeddings, then each layer: L + 1 of (B, T, C)
        both = _logits_and_pooled(m, hidden[-1], mask).cpu()
        picked = torch.stack([hidden[k + 1] for k in layers], dim=2).half().cpu()  # (B, T, len(layers), C)
        for b, j in enumerate(idx):
            rows[j] = both[b]
            states[j] = picked[b, :int(mask[b].sum())]
    if not rows:
        return torch.empty(0), TokenStates([])
    return torch.stack(rows), TokenStates(states)


@torch.no_grad()
def score(m: nn.Module, seqs: list[list[int]], pad_id: int, max_length: int,
          fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] = logits_of,
          batch_size: int = 64, share: tuple[int, int] = (0, 1),
          token_types: list[list[int]] | None = None) -> torch.Tensor:
    """fn's rows for every sequence, in input order, on the CPU (batches sorted by length for speed).
    With the default fn: a classifier's logits (N, labels). With ``share`` (k, n), only that share of
    the batches is computed and the other rows are NaN (no column at all if the share got no batch):
    ``merge_shares`` joins the n parts. ``token_types``: each sequence's segment ids (sentence pairs),
    passed to fn as a fourth argument."""
    m.eval()
    rows: list[torch.Tensor | None] = [None] * len(seqs)
    for idx, ids, mask, *types in _length_sorted_batches(m, seqs, pad_id, max_length, batch_size, share,
                                                         token_types):
        out = (fn(m, ids, mask, *types) if types else fn(m, ids, mask)).float().cpu()
        for j, r in zip(idx, out, strict=True):
            rows[j] = r
    if share != (0, 1):
        width = next((r.numel() for r in rows if r is not None), 0)
        missing = torch.full((width,), float("nan"))
        rows = [missing if r is None else r for r in rows]
    return torch.stack(rows) if rows else torch.empty(0)


def merge_shares(parts: list[torch.Tensor]) -> torch.Tensor:
    """The whole pass from the n shares of ``score(..., share=(k, n))``: each row from the one part
    that computed it. A share left without a batch (more shares than batches) computed nothing."""
    if len({len(p) for p in parts}) != 1:
        raise ValueError(f"shares of different passes: {[len(p) for p in parts]} rows")
    parts = [p for p in parts if p.dim() == 2 and p.shape[1] > 0]
    if not parts:
        return torch.empty(0)
    if any(p.shape != parts[0].shape for p in parts):
        raise ValueError(f"shares of different passes: shapes {[tuple(p.shape) for p in parts]}")
    done = [~p.isnan().all(dim=1) for p in parts]  # a real row is never all NaN: a non-finite pass fails here
    count = torch.stack(done).sum(0)
    if not (count == 1).all():
        raise ValueError(f"{int((count == 0).sum())} rows computed by no share, {int((count > 1).sum())} by several")
    out = parts[0].clone()
    for p, d in zip(parts[1:], done[1:], strict=True):
        out[d] = p[d]
    return out


def classification_metrics(pred: torch.Tensor, labels: list[int], num_labels: int) -> dict[str, float]:
    y = torch.tensor(labels)
    acc = (pred == y).float().mean().item()
    f1s = []
    for c in range(num_labels):
        tp = ((pred == c) & (y == c)).sum().item()
        fp = ((pred == c) & (y != c)).sum().item()
        fn = ((pred != c) & (y == c)).sum().item()
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {"accuracy": acc, "macro_f1": sum(f1s) / len(f1s), "n": len(labels)}


class ClassifierOutputs(nn.Module):
    """Training-side wrapper: one forward returning the logits and the last hidden states, and with
    ``layers`` (0-based) those layers' outputs too, stacked (B, T, len(layers), C)."""

    def __init__(self, clf: nn.Module, layers: list[int] | None = None) -> None:
        super().__init__()
        self.clf, self.layers = clf, layers

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        if not self.layers:
            last = self.clf.encoder(input_ids, attention_mask, token_type_ids)
            return self.clf.logits(last), last, None
        hidden = self.clf.encoder.hidden_states(input_ids, attention_mask, token_type_ids)
        last = hidden[-1]
        return self.clf.logits(last), last, torch.stack([hidden[k + 1] for k in self.layers], dim=2)
