"""The compute thread: runs what it is given on itself, hands back results and exceptions."""

from __future__ import annotations

import threading

import pytest
import torch

from app.core.compute import ComputeThread


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
