"""The compute thread: runs what it is given on itself, hands back results and exceptions."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from app.core.compute import ComputeThread, _malloc_trim

ROOT = Path(__file__).resolve().parents[2]


def test_runs_on_its_own_thread_and_returns_results():
    c = ComputeThread(threads=1)
    try:
        name = c.call(lambda: threading.current_thread().name)
        assert name == "torch-compute"
        assert c.call(torch.get_num_threads) == 1  # threads= applies on the compute thread itself
        assert c.call(lambda a, b: (a @ b).sum().item(), torch.ones(3, 4), torch.ones(4, 5)) == 60.0
    finally:
        c.stop()


def test_exceptions_reach_the_caller_and_the_thread_survives():
    c = ComputeThread()
    try:
        with pytest.raises(ZeroDivisionError):
            c.call(lambda: 1 / 0)
        assert c.call(lambda: 2 + 2) == 4
        # A call made from the compute thread itself runs inline instead of deadlocking.
        assert c.call(lambda: c.call(lambda: "inner")) == "inner"
    finally:
        c.stop()


# Frees 300 MB of 2 MB blocks from the heap under a live 1 MB block: free() alone keeps those pages
# (only the heap's top can shrink), a trim hands them back. Run in a fresh interpreter so the heap's
# layout is this script's, not pytest's.
_CHURN = """
import sys, time
from app.core.compute import ComputeThread
def rss_mb():
    return next(int(l.split()[1]) // 1024 for l in open("/proc/self/status") if l.startswith("VmRSS"))
c = ComputeThread(trim_interval_s=float(sys.argv[1]))
warm = [b"\\\\x01" * 2_000_000 for _ in range(5)]  # freed mmapped blocks raise glibc's mmap threshold
del warm
blocks = [b"\\\\x01" * 2_000_000 for _ in range(150)]
pin = b"\\\\x02" * 1_000_000
del blocks
before = rss_mb()
time.sleep(0.02)
c.call(lambda: None)
c.call(lambda: None)  # the trim follows a job's result: this one starts after the first one's trim
print(before, rss_mb(), c.trims)
"""


@pytest.mark.skipif(_malloc_trim() is None, reason="needs glibc's malloc_trim")
@pytest.mark.parametrize("interval, trimmed", [(0.0, False), (0.001, True)])
def test_freed_heap_pages_go_back_to_the_system_after_a_job(interval, trimmed):
    out = subprocess.run([sys.executable, "-c", _CHURN, str(interval)], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.split()
    before, after, trims = map(int, out)
    assert before > 250  # the 300 MB are still resident after free()
    if trimmed:
        assert trims >= 1 and after < before - 200
    else:
        assert trims == 0 and after > before - 20


# Eight threads alive at once, each allocating: glibc gives each new thread an arena of its own up to
# its limit (8 per core). malloc_stats() prints one "Arena N:" block per arena to stderr.
_ARENAS = """
import ctypes, sys, threading
from app.core.compute import limit_malloc_arenas
print(limit_malloc_arenas(int(sys.argv[1])))
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
start, done = threading.Barrier(9), threading.Barrier(9)
def work():
    start.wait()
    libc.malloc(4096)
    done.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
start.wait()
done.wait()
libc.malloc_stats()
"""


@pytest.mark.skipif(_malloc_trim() is None, reason="needs glibc")
@pytest.mark.parametrize("limit", [0, 2])
def test_malloc_arenas_are_capped_before_threads_start(limit):
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    run = subprocess.run([sys.executable, "-c", _ARENAS, str(limit)], capture_output=True, text=True, cwd=ROOT,
                         check=True, env=env)
    arenas = run.stderr.count("Arena ")
    if limit:
        assert run.stdout.strip() == "True" and arenas == limit
    else:  # glibc's default: the threads got arenas of their own
        assert run.stdout.strip() == "False" and arenas >= 4


def test_an_arena_limit_from_the_environment_stands():
    run = subprocess.run([sys.executable, "-c", "from app.core.compute import limit_malloc_arenas as f; print(f(2))"],
                         capture_output=True, text=True, cwd=ROOT, check=True,
                         env={**os.environ, "MALLOC_ARENA_MAX": "4"})
    assert run.stdout.strip() == "False"


def test_the_service_caps_the_arenas_before_its_threads_start(ckpts, monkeypatch):
    from fastapi.testclient import TestClient

    import app.core.service as service
    from app.main import create_app
    from tests.app.conftest import make_settings, wait_ready

    events = []
    real_compute = service.ComputeThread
    monkeypatch.setattr(service, "limit_malloc_arenas", lambda n: events.append(("arenas", n)) or True)
    monkeypatch.setattr(service, "ComputeThread", lambda *a: events.append("compute") or real_compute(*a))
    with TestClient(create_app(make_settings(ckpts, malloc_arenas=3, warmup=False))) as client:
        wait_ready(client)
    assert events == [("arenas", 3), "compute"]


def test_an_arena_limit_in_glibc_tunables_stands_too():
    code = "from app.core.compute import limit_malloc_arenas as f; print(f(2))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                         env={**os.environ, "GLIBC_TUNABLES": "glibc.malloc.arena_max=4"})
    assert run.stdout.strip() == "False"
