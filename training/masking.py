"""Dynamic masking for the MLM objective, drawn per batch (RoBERTa-style, as DistilBERT does).

15% of the real tokens are chosen; of those 80% become [MASK], 10% a random token, 10%
stay. With ``smoothing`` (exponent 0.7, the authors' ``mlm_smoothing``) rare tokens are
chosen more often than frequent ones: p(token) ∝ count(token) ** -0.7.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MaskingConfig:
    mlm_probability: float = 0.15
    mask_fraction: float = 0.8  # of chosen tokens -> [MASK]
    random_fraction: float = 0.1  # of chosen tokens -> a random token; the rest are kept
    smoothing: float | None = None  # e.g. 0.7: frequency smoothing of the masking probabilities


def token_weights(counts: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Per-vocabulary masking weight count ** -smoothing (unseen tokens get count 1)."""
    return counts.clamp(min=1).float() ** -smoothing


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: torch.Tensor,
                mask_id: int, vocab_size: int, cfg: MaskingConfig, generator: torch.Generator,
                weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (masked input ids, labels) with labels -100 where nothing is predicted."""
    ids = input_ids.clone()
    candidates = attention_mask.bool() & ~torch.isin(ids, special_ids.to(ids.device))
    if weights is None:
        probs = torch.full(ids.shape, cfg.mlm_probability)
    else:
        # Rescale the smoothed weights so the expected share of chosen tokens stays mlm_probability.
        w = weights[ids.cpu()] * candidates.cpu()
        n = candidates.sum().clamp(min=1)
        probs = (w / w.sum().clamp(min=1e-12) * n * cfg.mlm_probability).clamp(max=1.0)
    chosen = (torch.rand(ids.shape, generator=generator) < probs).to(ids.device) & candidates
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    r = torch.rand(ids.shape, generator=generator).to(ids.device)
    to_mask = chosen & (r < cfg.mask_fraction)
    to_random = chosen & (r >= cfg.mask_fraction) & (r < cfg.mask_fraction + cfg.random_fraction)
    random_ids = torch.randint(0, vocab_size, ids.shape, generator=generator).to(ids.device)
    ids[to_mask] = mask_id
    ids[to_random] = random_ids[to_random]
    return ids, labels
