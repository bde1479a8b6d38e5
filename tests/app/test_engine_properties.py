"""Property tests (Hypothesis) for the batching engine, without torch or HTTP.

Whatever the interleaving of submits, client cancellations and deadlines: every request
settles (a result or one of the engine's errors), nothing is left in a queue or a counter, every
answered input got its own output, and a poisoned or non-finite input fails only its request.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.backends import Backend, OutputSpec
from app.core.compute import ComputeThread
from app.core.engine import Engine
from app.core.errors import DeadlineExceeded, InferenceFailed, Overloaded, Unavailable
from app.core.metrics import Metrics
from app.settings import ModelSpec, Settings

POISON, NAN = 99, 98  # ids that make the fake model raise, or return NaN for that row
EXPECTED_ERRORS = (DeadlineExceeded, InferenceFailed, Overloaded, Unavailable, asyncio.CancelledError)


class FakeBackend(Backend):
    """Echoes each row's first id and length; raises on POISON anywhere in the batch (as a real
    kernel error would), NaN for a row holding NAN."""

    def __init__(self, name: str, max_length: int = 16, delay_s: float = 0.0) -> None:
        self.spec = ModelSpec(name=name, path=Path("/nonexistent"), role="student")
        self.name, self.role, self.path = name, "student", self.spec.path
        self.family, self.task, self.labels = "distilbert", "base", []
        self.max_length, self.hidden_size, self.default_pooling = max_length, 2, "mean"
        self.rows_seen = 0
        self.delay_s = delay_s

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        raise NotImplementedError

    def forward(self, ids, specs):
        self.rows_seen += len(ids)
        time.sleep(self.delay_s)
        if any(POISON in r for r in ids):
            raise RuntimeError("device-side assert")
        return [[math.nan, 0.0] if NAN in r else [float(r[0]), float(len(r))] for r in ids]

    def warmup(self, max_batch: int) -> None:
        pass

    def info(self) -> dict:
        return {"family": self.family, "task": self.task, "layers": 1, "hidden_size": 2, "parameters": 0,
                "device": "cpu", "dtype": "float32"}


row = st.lists(st.integers(1, 50), min_size=1, max_size=24)
request = st.fixed_dictionaries({
    "model": st.sampled_from(["a", "b"]),
    "rows": st.lists(row, min_size=1, max_size=4),
    "bad": st.sampled_from([None, None, None, POISON, NAN]),
    "timeout_s": st.sampled_from([1e-4, 0.005, 10.0, 10.0]),
    "cancel_after": st.sampled_from([None, None, 0.0, 0.002]),
    "start_after": st.sampled_from([0.0, 0.0, 0.001]),
})
knobs = st.fixed_dictionaries({
    "max_batch_size": st.integers(1, 8),
    "max_wait_ms": st.sampled_from([0.0, 1.0]),
    "max_queue_size": st.sampled_from([8, 64]),
    "max_queue_tokens": st.sampled_from([64, 4096]),
})


async def _scenario(requests: list[dict], knob: dict) -> None:
    s = Settings(models=[ModelSpec(name=n, path=Path("/nonexistent"), role="student") for n in ("a", "b")],
                 device="cpu", max_client_batch_size=4, **knob)
    backends = {n: FakeBackend(n) for n in ("a", "b")}
    compute = ComputeThread()
    engine = Engine(s, backends, Metrics(s.max_batch_size, s.max_batch_tokens), compute)
    engine.start()
    spec = OutputSpec("embed")
    try:
        async def one(r: dict):
            await asyncio.sleep(r["start_after"])
            rows = [list(x) for x in r["rows"]]
            if r["bad"] is not None:
                rows[0][-1] = r["bad"]
            return await engine.run(r["model"], rows, spec, r["timeout_s"])

        tasks = [asyncio.create_task(one(r)) for r in requests]
        for t, r in zip(tasks, requests, strict=True):
            if r["cancel_after"] is not None:
                asyncio.get_running_loop().call_later(r["cancel_after"], t.cancel)
        async with asyncio.timeout(20):  # a hang is the failure this test exists for
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for r, res in zip(requests, results, strict=True):
            if isinstance(res, BaseException):
                assert isinstance(res, EXPECTED_ERRORS), repr(res)
                continue
            assert r["bad"] is None, "a poisoned or NaN input was answered"
            assert [o.values for o in res] == [[float(x[0]), float(len(x))] for x in r["rows"]]
        for r, res in zip(requests, results, strict=True):
            if r["bad"] in (POISON, NAN) and not isinstance(res, asyncio.CancelledError | DeadlineExceeded
                                                             | Overloaded):
                assert isinstance(res, InferenceFailed), repr(res)
            if (r["bad"] is None and r["cancel_after"] is None and r["timeout_s"] >= 10
                    and not isinstance(res, Overloaded)):
                assert not isinstance(res, BaseException), repr(res)  # a clean input is answered
        # Nothing left behind: queues drained, counters back to zero.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(b.depth for b in engine.batchers.values()):
            await asyncio.sleep(0.005)
        for b in engine.batchers.values():
            assert b.depth == 0 and b.queued_tokens == 0, (b.depth, b.queued_tokens)
            assert b.pending == 0, b.pending
    finally:
        engine.stop()
        compute.stop()


@settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(requests=st.lists(request, min_size=1, max_size=10), knob=knobs)
def test_any_interleaving_settles_and_leaves_nothing_behind(requests, knob):
    asyncio.run(_scenario(requests, knob))


def test_a_poisoned_input_fails_alone():
    """Deterministic companion of the property: one batch of three, the middle one poisoned."""
    async def go():
        s = Settings(models=[ModelSpec(name="a", path=Path("/x"), role="student")], device="cpu",
                     max_wait_ms=50.0)
        compute = ComputeThread()
        engine = Engine(s, {"a": FakeBackend("a")}, Metrics(32, 8192), compute)
        engine.start()
        try:
            spec = OutputSpec("embed")
            results = await asyncio.gather(*(engine.run("a", [[x, 1]], spec, 10.0) for x in (5, POISON, 7)),
                                           return_exceptions=True)
        finally:
            engine.stop()
            compute.stop()
        assert [o.values[0] for o in results[0]] == [5.0] and [o.values[0] for o in results[2]] == [7.0]
        assert isinstance(results[1], InferenceFailed)

    asyncio.run(go())


@pytest.mark.parametrize("bad", [NAN])
def test_non_finite_output_fails_alone(bad):
    async def go():
        s = Settings(models=[ModelSpec(name="a", path=Path("/x"), role="student")], device="cpu")
        compute = ComputeThread()
        engine = Engine(s, {"a": FakeBackend("a")}, Metrics(32, 8192), compute)
        engine.start()
        try:
            spec = OutputSpec("embed")
            return await asyncio.gather(engine.run("a", [[3, 1], [bad, 2]], spec, 10.0),
                                        engine.run("a", [[4, 1]], spec, 10.0), return_exceptions=True)
        finally:
            engine.stop()
            compute.stop()

    first, second = asyncio.run(go())
    assert isinstance(first, InferenceFailed) and "finite" in str(first)
    assert [o.values[0] for o in second] == [4.0]


def test_a_saturated_queue_refuses_new_work():
    """Sixty inputs, one 0.1 s forward each, a 5 s deadline: once the oldest has waited longer than
    SHED_WAIT_SHARE of the deadline (2 s), new work is refused at once (429) instead of queued to time
    out; taken again once the backlog is gone. Checked at 3 s: a second from either edge, so a loaded
    machine's late wake-up does not move it out of the window."""
    async def go():
        s = Settings(models=[ModelSpec(name="a", path=Path("/x"), role="student")], device="cpu",
                     max_batch_size=1, request_timeout_s=5.0)
        compute = ComputeThread()
        engine = Engine(s, {"a": FakeBackend("a", delay_s=0.1)}, Metrics(1, 8192), compute)
        engine.start()
        batcher = engine.batchers["a"]
        try:
            spec = OutputSpec("embed")
            tasks = [asyncio.create_task(engine.run("a", [[i + 1]], spec, 5.0)) for i in range(60)]
            await asyncio.sleep(3.0)
            with pytest.raises(Overloaded, match="saturated"):
                batcher.reserve(1)
            await asyncio.gather(*tasks, return_exceptions=True)
            while batcher.depth:
                await asyncio.sleep(0.01)
            batcher.reserve(1)  # an empty queue takes work whatever the last wait was
            batcher.release(1)
        finally:
            engine.stop()
            compute.stop()

    asyncio.run(go())
