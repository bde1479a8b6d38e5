"""Reranking with a cross-encoder classifier: one score per (query, text) pair, the order they give, and
how two models' orders agree (/compare task=rerank). Pure functions over plain floats.

The score of a pair, from the classifier's outputs for it:
- one label (a regression head, as sentence-transformers' CrossEncoder models have): its logit through a
  sigmoid, in (0, 1); with ``raw_scores`` the logit itself;
- two labels: the probability of the second (label 1, the positive or relevant class of a binary
  classifier), the softmax the service computes for /classify; with ``raw_scores`` its logit.
A classifier with more labels has no one relevance score: refused (Unsupported).
"""

from __future__ import annotations

import math

from .errors import Unsupported


def check_cross_encoder(name: str, labels: list[str]) -> None:
    if len(labels) not in (1, 2):
        raise Unsupported(f"model {name!r} has {len(labels)} labels ({', '.join(labels[:5])}); reranking needs a "
                          "cross-encoder with one (a relevance logit) or two (not relevant, relevant)")


def wants_logits(labels: list[str], raw_scores: bool) -> bool:
    """Whether the forward should return logits (else probabilities) for ``score``."""
    return raw_scores or len(labels) == 1


def score(values: list[float], raw_scores: bool) -> float:
    """One pair's relevance from its classifier outputs (logits when ``wants_logits``, else probabilities)."""
    if len(values) == 1:
        return values[0] if raw_scores else 1.0 / (1.0 + math.exp(-values[0]))
    return values[1]


def ranking(scores: list[float]) -> list[int]:
    """Indices, best first; a tie keeps the earlier text first."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def overlap(a: list[int], b: list[int], top_n: int) -> float:
    """Share of the first ``top_n`` of ranking ``a`` that are also in the first ``top_n`` of ``b``."""
    k = min(top_n, len(a))
    return len(set(a[:k]) & set(b[:k])) / k if k else 1.0


def _ranks(scores: list[float]) -> list[float]:
    """Rank of each score, 1 the highest; ties share their average rank."""
    order = ranking(scores)
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rank correlation of two score lists (ties at average ranks); None below 2 items or when
    either list is constant (no order to correlate)."""
    if len(a) < 2:
        return None
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(va * vb) if va and vb else None
