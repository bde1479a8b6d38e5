"""Where the CPU goes during a load level: the load generator, the service's event loop
(HTTP, validation, routing) and the service's other threads (the torch compute thread and
its OpenMP workers, tokenization, batchers).

On a machine where the load generator shares the cores with the service, these numbers say
how much of the hardware was left for the model. Linux only (/proc); elsewhere None.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class Snapshot:
    client_s: float  # this process, all threads
    loop_s: float | None  # the service's main thread: the event loop
    other_s: float | None  # every other thread of the service
    wall: float


def _cpu_seconds(stat: str) -> float:
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": utime, stime are fields 14, 15
    return (int(fields[11]) + int(fields[12])) / TICK


def snapshot(server_pid: int | None) -> Snapshot:
    loop = other = None
    if server_pid is not None:
        try:
            # The process line counts every thread, ended ones too; the main thread's own line is
            # the event loop; the rest is everything else.
            total = _cpu_seconds(Path(f"/proc/{server_pid}/stat").read_text())
            loop = _cpu_seconds(Path(f"/proc/{server_pid}/task/{server_pid}/stat").read_text())
            other = total - loop
        except OSError:
            loop = other = None
    return Snapshot(time.process_time(), loop, other, time.perf_counter())


def per_request(before: Snapshot, after: Snapshot, requests: int) -> dict[str, float] | None:
    """CPU milliseconds per completed request, by side; None where not measurable."""
    if requests <= 0 or before.loop_s is None or after.loop_s is None:
        return None
    n = requests / 1000
    out = {
        "client_ms": (after.client_s - before.client_s) / n,
        "server_loop_ms": (after.loop_s - before.loop_s) / n,
        "server_other_ms": (after.other_s - before.other_s) / n,  # type: ignore[operator]
    }
    out["cores_busy"] = ((after.client_s - before.client_s) + (after.loop_s - before.loop_s)
                         + (after.other_s - before.other_s)) / max(after.wall - before.wall, 1e-9)  # type: ignore[operator]
    return out
