"""The one thread that runs torch in the service process.

Why one: with the OpenMP backend, every thread that starts a parallel region gets its own
OpenMP thread team. Two teams on the same cores outnumber them, and libgomp then stops
its workers spinning between parallel regions, so each of the hundreds of small regions in
a forward pays a futex wake-up. Measured on the 2-core CPU of the README: the student's
batch-1 forward takes 3.4 ms on the only torch thread and 5.1 ms once a second thread has
run any torch op (even a mean over a 512x384 tensor). So model loading, warm-up, every
forward and every pooling/softmax go through here; the batchers (one per model) only
decide *what* to run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


def _libc_function(name: str):
    """A glibc function by name, or None where the C library has none (musl, macOS)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def _malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, or None where the C library has none."""
    trim = _libc_function("malloc_trim")
    if trim is None:
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


M_ARENA_MAX = -8  # glibc's malloc.h


def arena_limit_from_environment() -> bool:
    """An arena limit the operator chose for glibc (MALLOC_ARENA_MAX, or glibc.malloc.arena_max in
    GLIBC_TUNABLES): it stands."""
    return bool(os.environ.get("MALLOC_ARENA_MAX")) or "glibc.malloc.arena_max" in os.environ.get("GLIBC_TUNABLES", "")


def limit_malloc_arenas(n: int) -> bool:
    """At most ``n`` glibc malloc arenas from now on (0: leave glibc's default, 8 per core); False where
    it was not set: no glibc, or a limit already chosen in the environment (that choice stands).
    Why: glibc gives each new thread that allocates an arena of its own until the limit is reached (the
    compute thread, ONNX Runtime's and OpenMP's workers, the tokenizer threads), and each arena keeps its
    own fragmented free memory, which a trim cannot merge. Called before the threads start."""
    mallopt = _libc_function("mallopt")
    if n <= 0 or mallopt is None or arena_limit_from_environment():
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_ARENA_MAX, n) == 1


class ComputeThread:
    """``trim_interval_s``: after a job, hand the C heap's free pages back to the system if this long
    has passed since the last time (0: never). Why: forwards allocate activations of every batch
    shape; glibc keeps what they free, and mixed shapes fragment it, so a long-running service's RSS
    climbs without any leak (the student, int8, random shapes: 423 -> 987 MB over 500 forwards, still
    climbing; with a trim after each: flat at 330 MB). Once a second costs a few milliseconds.
    """

    def __init__(self, threads: int | None = None, trim_interval_s: float = 0.0) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, args=(threads,), name="torch-compute", daemon=True)
        self.busy_since: float | None = None  # time.monotonic() when the running job started (the watchdog's)
        self._trim = _malloc_trim() if trim_interval_s > 0 else None
        self._trim_interval_s = trim_interval_s
        self.trims = 0
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def waiting(self) -> int:
        """Jobs queued behind the running one."""
        return self._jobs.qsize()

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the compute thread; block until it returns (or raises)."""
        if threading.current_thread() is self._thread:  # already here: no hand-off
            return fn(*args)
        if not self._thread.is_alive():  # nobody would ever take the job
            raise RuntimeError("the compute thread has stopped")
        fut: Future = Future()
        self._jobs.put((fn, args, fut))
        return fut.result()

    def stop(self, timeout: float | None = 30.0) -> None:
        self._jobs.put(None)
        self._thread.join(timeout)

    def _run(self, threads: int | None) -> None:
        if threads:
            import torch

            torch.set_num_threads(threads)  # OpenMP's thread count is per calling thread
        last_trim = time.monotonic()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args, fut = job
            if not fut.set_running_or_notify_cancel():
                continue
            self.busy_since = time.monotonic()
            try:
                fut.set_result(fn(*args))
            except BaseException as e:  # handed to the caller, never kills the thread
                fut.set_exception(e)
            finally:
                self.busy_since = None
            if self._trim is not None and time.monotonic() - last_trim >= self._trim_interval_s:
                self._trim()
                self.trims += 1
                last_trim = time.monotonic()
