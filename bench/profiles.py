"""Input profiles for the benchmark: short, medium, long and mixed lengths.

Drawn from the real sentiment snippets and news sentences when the default assets are in
the cache (experiments/assets.py), else from the bundled sample_texts.txt.
"""

from __future__ import annotations

import random
from pathlib import Path

PROFILES = ("short", "medium", "long", "mixed")
BOUNDS = {"short": (1, 20), "medium": (21, 64), "long": (65, 256)}
MAX_JOINED = 1000  # texts joined to reach a length band before the counter is taken for broken


def source_texts() -> tuple[list[str], str]:
    try:
        from lab.assets import cache_root

        root = cache_root()
        if (root / "sentiment" / ".complete").is_file() and (root / "news" / ".complete").is_file():
            from lab.datasets import load_news, load_sentiment

            snippets = [t for t, _ in load_sentiment(root / "sentiment")["test"]]
            news = load_news(root / "news")
            return snippets + news["heldout"] + news["train"][:400], "real (sentiment test split + held-out news)"
    except Exception:  # a broken cache only means the bundled sample is used
        pass
    lines = (Path(__file__).parent / "sample_texts.txt").read_text().splitlines()
    return [ln for ln in lines if ln.strip()], "bundled sample (bench/sample_texts.txt)"


def _synthesize(texts: list[str], lo: int, hi: int, count_tokens, rng: random.Random, k: int = 40):
    """Join random texts until a band is reached (for small samples that lack long texts)."""
    out = []
    for _ in range(k):
        parts: list[str] = []
        while True:
            parts.append(rng.choice(texts))
            text = " ".join(parts)
            n = count_tokens([text])[0]
            if n >= lo:
                break
            if len(parts) > MAX_JOINED:  # a tokenizer that pads or truncates every text to one length
                raise ValueError(f"{MAX_JOINED} texts joined still count {n} tokens, under {lo}: the token "
                                 "counter must count real tokens (a tokenizer.json with padding or truncation "
                                 "enabled counts every text alike)")
        while n > hi:
            if not text:
                raise ValueError(f"an empty text counts {n} tokens, over {hi}: the token counter must count real "
                                 "tokens (a tokenizer.json with padding enabled counts every text alike)")
            text = " ".join(text.split()[: int(len(text.split()) * 0.9)])
            n = count_tokens([text])[0]
        out.append((text, n))
    return out


def build(profile: str, texts: list[str], count_tokens, n: int = 512, seed: int = 0) -> list[tuple[list[str], int]]:
    """``n`` single-input requests as (texts, token count), lengths by profile."""
    rng = random.Random(seed)
    counts = count_tokens(texts)
    pools = {}
    for name, (lo, hi) in BOUNDS.items():
        pool = [(t, c) for t, c in zip(texts, counts, strict=True) if lo <= c <= hi]
        pools[name] = pool if len(pool) >= 5 else _synthesize(texts, lo, hi, count_tokens, rng)
    if profile == "mixed":
        picks = [rng.choice(pools[rng.choice(("short", "short", "medium", "long"))]) for _ in range(n)]
    else:
        picks = [rng.choice(pools[profile]) for _ in range(n)]
    return [([t], c) for t, c in picks]
