"""Batched scoring: a model's logits or pooled embeddings for many sequences (length-sorted batches, in
input order), the teacher's cached outputs for distillation, and classification metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from model.pooling import mean_pool

from .data import TokenStates, collate

log = logging.getLogger("training")


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
                           token_types: list[list[int]] | None = None):
    """(indices into seqs, ids, mask) on ``m``'s device, in batches of similar length (less padding);
    with ``token_types``, (indices, ids, mask, token type ids)."""
    device = next(m.parameters()).device
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    for i in range(0, len(order), batch_size):
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
          batch_size: int = 64, token_types: list[list[int]] | None = None) -> torch.Tensor:
    """fn's rows for every sequence, in input order, on the CPU (batches sorted by length for speed).
    With the default fn: a classifier's logits (N, labels). ``token_types``: each sequence's segment ids
    (sentence pairs), passed to fn as a fourth argument."""
    m.eval()
    rows: list[torch.Tensor | None] = [None] * len(seqs)
    for idx, ids, mask, *types in _length_sorted_batches(m, seqs, pad_id, max_length, batch_size,
                                                         token_types):
        out = (fn(m, ids, mask, *types) if types else fn(m, ids, mask)).float().cpu()
        for j, r in zip(idx, out, strict=True):
            rows[j] = r
    return torch.stack(rows) if rows else torch.empty(0)


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
