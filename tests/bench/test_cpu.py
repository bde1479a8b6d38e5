"""CPU accounting per request: the load generator vs the service's event loop vs its other threads."""

from __future__ import annotations

import os
import threading
import time

from lab.cpu import per_request, snapshot


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_threads_are_split_into_main_and_others():
    pid = os.getpid()  # this process plays the service: main thread = "event loop"
    before = snapshot(pid)
    t = threading.Thread(target=_spin, args=(0.3,))
    t.start()
    t.join()
    mid = snapshot(pid)
    _spin(0.3)
    after = snapshot(pid)
    assert mid.other_s - before.other_s >= 0.2 and mid.loop_s - before.loop_s < 0.1
    assert after.loop_s - mid.loop_s >= 0.2
    split = per_request(before, after, requests=100)
    assert split["server_other_ms"] >= 2.0 and split["server_loop_ms"] >= 2.0  # 0.2 s over 100 requests
    assert split["client_ms"] >= 4.0  # process_time covers both spins


def test_no_server_pid_means_no_split():
    assert per_request(snapshot(None), snapshot(None), requests=10) is None
    assert per_request(snapshot(os.getpid()), snapshot(os.getpid()), requests=0) is None
