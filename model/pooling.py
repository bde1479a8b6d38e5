"""Sentence embeddings from token states: mean over real tokens, or the [CLS] vector."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Pooling = Literal["mean", "cls"]


def mean_pool(last_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the non-padding positions, (B, T, C) -> (B, C)."""
    mask = attention_mask[:, :, None].to(last_hidden.dtype)  # (B, T) -> (B, T, 1)
    summed = (last_hidden * mask).sum(dim=1)
    return summed / mask.sum(dim=1).clamp(min=1e-9)


def cls_pool(last_hidden: torch.Tensor) -> torch.Tensor:
    return last_hidden[:, 0]


def pool(
    last_hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    method: Pooling = "mean",
    normalize: bool = False,
) -> torch.Tensor:
    if method == "mean":
        out = mean_pool(last_hidden, attention_mask)
    elif method == "cls":
        out = cls_pool(last_hidden)
    else:
        raise ValueError(f"pooling must be 'mean' or 'cls', got {method!r}")
    return F.normalize(out, p=2, dim=-1) if normalize else out
