"""Extra text for a student to learn the teacher on: nearby copies of the training texts.

The teacher scores these copies and only its soft targets supervise them (the recipe's "perturbed" text,
``python -m training compress``, and ``make models``). ``perturb``'s output is fixed byte for byte: the
ablation's stored runs were scored on it (tests/training/test_compress.py pins its digest).
"""

from __future__ import annotations

import random


def perturb(text: str, rng: random.Random, drop: float = 0.15, keep: tuple[float, float] = (0.4, 0.8)) -> str:
    """A nearby text for the teacher to score (Tang et al. 2019's augmentation, without a tagger): a
    contiguous span of ``keep`` of the words, or each word dropped with probability ``drop`` (at least
    one), equally often. Labels do not survive such edits (a cut can drop the "not"), which is why only the
    teacher's soft targets supervise these texts."""
    words = text.split()
    if len(words) < 3:
        return " ".join(words)  # whitespace folded as in every other copy: one line per text
    if rng.random() < 0.5:
        n = max(2, round(len(words) * rng.uniform(*keep)))
        start = rng.randrange(len(words) - n + 1)
        return " ".join(words[start:start + n])
    gone = {i for i in range(len(words)) if rng.random() < drop} or {rng.randrange(len(words))}
    kept = [w for i, w in enumerate(words) if i not in gone]
    return " ".join(kept if len(kept) >= 2 else words[:2])


def picked_for_copies(n: int, fraction: float, rng: random.Random) -> list[int]:
    """Which of ``n`` training texts get a perturbed copy, ``fraction`` copies per text: every text
    ``floor(fraction)`` times, then a seeded sample of the rest (a file in corpus order would otherwise
    give its first texts, often one class, more than their share). ``make models``' selection."""
    whole, part = divmod(round(fraction * n), max(n, 1))
    return list(range(n)) * whole + rng.sample(range(n), part)


def perturbed_copies(texts: list[str], fraction: float, seed: int,
                     pairs: list[str] | None = None) -> tuple[list[str], list[str] | None]:
    """``fraction`` perturbed copies per text (both halves of a sentence pair), seeded."""
    rng = random.Random(seed)
    picked = picked_for_copies(len(texts), fraction, rng)
    if pairs is None:
        return [perturb(texts[i], rng) for i in picked], None
    out_a, out_b = [], []
    for i in picked:
        out_a.append(perturb(texts[i], rng))
        out_b.append(perturb(pairs[i], rng))
    return out_a, out_b
