"""How a closed window of inputs becomes forward passes: sorted by length, then cut where a separate
forward costs less than the padding it saves.

A forward's cost is modelled as ``overhead + padded tokens`` (in tokens): ``overhead`` is what one
more forward costs whatever its size (Python dispatch, one kernel launch per op, thread wake-ups),
measured per model at start-up (``measure_overhead``) unless the settings fix it. The cut that
minimises the window's total is found exactly (dynamic programming over the sorted lengths). Why
not a padding-ratio limit alone: on a small model that limit cut a window of 32 short sentences into
forwards of about 5, each paying the fixed cost (measured: 26% fewer inputs/s than no cut at all on
the 2-core CPU), while on long inputs padding is what costs and a cut pays.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Calibration shapes: a short row alone, and a batch of them (the linear fit's two points).
PROBE_TOKENS, PROBE_BATCH, PROBE_REPEATS = 16, 16, 5
MAX_OVERHEAD_TOKENS = 4096.0  # a slow first call must not make every window one forward


def plan(lengths: list[int], overhead: float, max_padding_ratio: float | None = None) -> list[list[int]]:
    """Indices into ``lengths`` grouped into forwards: each group contiguous in ascending length, the
    grouping of least total ``overhead + len(group) * max length`` (ties: fewer forwards). With
    ``max_padding_ratio`` no group's padded/real tokens exceeds it (a group of one always fits)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    n = len(order)
    if n == 0:
        return []
    xs = [max(1, lengths[i]) for i in order]
    # best[j]: least cost of the first j inputs; cut[j]: where their last group starts.
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest, real = xs[j - 1], 0
        for i in range(j - 1, -1, -1):  # the last group is xs[i:j]
            real += xs[i]
            if max_padding_ratio is not None and (j - i) * longest > max_padding_ratio * real:
                break  # a longer group (smaller i) only pads more
            cost = best[i] + overhead + (j - i) * longest
            if cost <= best[j] + 1e-9:  # a tie: the larger group, fewer forwards
                best[j], cut[j] = cost, i
    groups: list[list[int]] = []
    j = n
    while j > 0:
        i = cut[j]
        groups.append(order[i:j])
        j = i
    groups.reverse()
    return groups


def measure_overhead(forward: Callable[[list[list[int]]], object], filler: int, cls: int, sep: int,
                     clock: Callable[[], float] = time.perf_counter) -> float:
    """One forward's fixed cost in padded tokens, from the fastest of a few timings of a
    PROBE_TOKENS-token row alone and of PROBE_BATCH such rows: t = per_token * (overhead + tokens)."""
    row = [cls] + [filler] * (PROBE_TOKENS - 2) + [sep]

    def fastest(batch: list[list[int]]) -> float:
        times = []
        for _ in range(PROBE_REPEATS):
            t0 = clock()
            forward(batch)
            times.append(clock() - t0)
        return min(times)

    alone, together = fastest([row]), fastest([row] * PROBE_BATCH)
    per_token = (together - alone) / ((PROBE_BATCH - 1) * PROBE_TOKENS)
    if per_token <= 0:  # the batch cost no more than one row: forwards are all overhead
        return MAX_OVERHEAD_TOKENS
    return min(MAX_OVERHEAD_TOKENS, max(0.0, alone / per_token - PROBE_TOKENS))
