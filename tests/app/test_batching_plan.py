"""The window's cut into forwards (app/core/batching.py): optimal under its cost model, the padding cap
kept, and the fixed cost a forward pays measured from timings."""

from __future__ import annotations

import itertools
import random

import pytest

from app.core.batching import MAX_OVERHEAD_TOKENS, measure_overhead, plan


def _cost(lengths: list[int], groups: list[list[int]], overhead: float) -> float:
    return sum(overhead + len(g) * max(lengths[i] for i in g) for g in groups)


def _best_by_brute_force(lengths: list[int], overhead: float) -> float:
    """Every way to cut the sorted lengths into contiguous groups (2^(n-1) of them)."""
    xs = sorted(lengths)
    best = float("inf")
    for cuts in itertools.product((False, True), repeat=len(xs) - 1):
        groups, cur = [], [xs[0]]
        for x, cut in zip(xs[1:], cuts, strict=True):
            if cut:
                groups.append(cur)
                cur = []
            cur.append(x)
        groups.append(cur)
        best = min(best, sum(overhead + len(g) * max(g) for g in groups))
    return best


@pytest.mark.parametrize("overhead", [0.0, 5.0, 40.0, 300.0])
def test_plan_is_the_cheapest_cut(overhead):
    rng = random.Random(int(overhead))
    for _ in range(30):
        lengths = [rng.choice([3, 5, 8, 13, 21, 60, 128, 256]) + rng.randrange(3) for _ in range(rng.randint(1, 10))]
        groups = plan(lengths, overhead)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))  # every input once
        for g in groups:  # ascending and contiguous in sorted order
            assert [lengths[i] for i in g] == sorted(lengths[i] for i in g)
        assert _cost(lengths, groups, overhead) == pytest.approx(_best_by_brute_force(lengths, overhead))


def test_short_inputs_share_a_forward_and_a_long_one_goes_alone():
    lengths = [12, 9, 15, 11, 256, 14, 10, 13]
    groups = plan(lengths, overhead=40.0)
    assert len(groups) == 2
    assert groups[1] == [4]  # the long input alone: padding seven short ones to 256 would cost far more
    # with no fixed cost, equal lengths still share and every other length goes alone
    assert len(plan([5, 5, 7, 9], overhead=0.0)) == 3
    # a forward that costs a lot whatever its size: one forward for the window
    assert len(plan(lengths, overhead=MAX_OVERHEAD_TOKENS)) == 1


def test_padding_cap_holds_whatever_the_overhead():
    rng = random.Random(7)
    lengths = [rng.randint(2, 200) for _ in range(32)]
    for cap in (1.0, 1.2, 2.0):
        for g in plan(lengths, overhead=MAX_OVERHEAD_TOKENS, max_padding_ratio=cap):
            real = sum(lengths[i] for i in g)
            assert len(g) * max(lengths[i] for i in g) <= cap * real + 1e-9
    assert plan([], overhead=10.0) == []


def test_measure_overhead_recovers_a_known_cost():
    """A forward whose time is per_token * (overhead + padded tokens) on a fake clock."""
    now = [0.0]

    def clock() -> float:
        return now[0]

    for true_overhead in (0.0, 12.0, 90.0):

        def forward(batch, overhead=true_overhead):
            now[0] += 1e-5 * (overhead + len(batch) * max(len(r) for r in batch))

        got = measure_overhead(forward, filler=1, cls=2, sep=3, clock=clock)
        assert got == pytest.approx(true_overhead, abs=1e-6)

    def flat(batch):  # a batch costs what one row costs: all overhead, capped
        now[0] += 1e-3

    assert measure_overhead(flat, 1, 2, 3, clock=clock) == MAX_OVERHEAD_TOKENS
