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

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class ComputeThread:
    def __init__(self, threads: int | None = None) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, args=(threads,), name="torch-compute", daemon=True)
        self.busy_since: float | None = None  # time.monotonic() when the running job started (the watchdog's)
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
