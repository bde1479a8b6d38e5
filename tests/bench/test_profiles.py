"""Input profiles: every request in its length band, and a token counter that cannot reach a band refused
rather than looped on."""

from __future__ import annotations

import pytest

from bench.profiles import BOUNDS, build


def _words(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def test_each_profile_stays_in_its_band():
    texts = [" ".join(["word"] * n) for n in (3, 5, 8, 12, 18)]  # short only: medium and long are joined
    for profile in ("short", "medium", "long"):
        lo, hi = BOUNDS[profile]
        reqs = build(profile, texts, _words, n=50)
        assert len(reqs) == 50
        assert all(lo <= n <= hi and len(t) == 1 and _words(t)[0] == n for t, n in reqs)


def test_a_counter_that_pads_every_text_to_one_length_is_refused():
    texts = ["a few words here", "and some more there", "one", "two words", "the last one"]
    with pytest.raises(ValueError, match="count real tokens"):
        build("long", texts, lambda xs: [16] * len(xs), n=5)  # padded to 16 whatever the text


def test_a_counter_that_never_counts_under_a_band_is_refused():
    texts = ["a few words here", "and some more there", "one", "two words", "the last one"]
    with pytest.raises(ValueError, match="count real tokens"):
        build("medium", texts, lambda xs: [300] * len(xs), n=5)  # over every band whatever the text
