"""The engine: one queue and one worker thread per model, dynamic batching,
backpressure, deadlines, per-stage timings and metrics. No HTTP here.

A batch closes when it holds ``max_batch_size`` inputs, or ``max_batch_tokens``
padded tokens, or ``max_wait_ms`` after its first input arrived. The inputs of the
closed window are sorted by length and cut into sub-batches where a separate forward costs less
than the padding it saves (app/core/batching.py); each sub-batch is one forward pass, run on the
process's one compute thread (app/core/compute.py), which also pools and normalises each row
as its request asked.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from ..backends import Backend, OutputSpec
from ..settings import Settings
from .batching import plan
from .compute import ComputeThread
from .errors import DeadlineExceeded, InferenceFailed, Overloaded, Unavailable
from .metrics import Metrics, ModelMetrics

log = logging.getLogger("app.engine")


# One forward's fixed cost in padded tokens until the start-up measures it (app/core/service.py).
DEFAULT_OVERHEAD_TOKENS = 32.0

# New work is refused (429) while the oldest unanswered input has waited longer than this share of
# the request deadline (Batcher._saturated): /compare and long inputs need the rest.
SHED_WAIT_SHARE = 0.4


def retry_after_seconds(queued: int, per_second: float) -> int:
    return max(1, math.ceil(queued / per_second)) if per_second > 0 else 1


@dataclass(eq=False)
class Item:
    """One input of one request, as it travels through the queue."""

    ids: list[int]
    spec: OutputSpec
    deadline: float  # time.monotonic()
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float = field(default_factory=time.perf_counter)
    segment: int = 0  # a sentence pair: where its second segment starts (0: a single text)
    cancelled: bool = False  # set on the event loop when the client went away
    queue_s: float = 0.0
    inference_s: float = 0.0


@dataclass
class Output:
    values: list[float]  # class scores in label order, or the embedding
    queue_s: float
    inference_s: float


class Batcher:
    """Queue + batching worker thread for one model; its forwards go to the compute thread."""

    def __init__(self, backend: Backend, settings: Settings, metrics: ModelMetrics,
                 compute: ComputeThread) -> None:
        self.backend = backend
        self.compute = compute
        self.s = settings
        self.m = metrics
        self._queue: deque[Item] = deque()
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"batcher-{backend.name}", daemon=True)
        self._rate = 0.0  # inputs/s, smoothed, for Retry-After
        self._expected = 0  # inputs being tokenized: the only ones worth waiting for
        self._tokens = 0  # real tokens of the queued inputs (max_queue_tokens)
        self._closed = False  # abort_queued() ran: nothing new is taken
        self._in_progress: float | None = None  # when the oldest input of the window being run was queued
        # One forward's fixed cost in padded tokens: how the window is cut (app/core/batching.py).
        self.overhead_tokens = (settings.forward_overhead_tokens if settings.forward_overhead_tokens is not None
                                else DEFAULT_OVERHEAD_TOKENS)

    # -- event-loop side -------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop taking windows; inputs still queued are failed (503), not run."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """False once the worker thread has ended, stopped or crashed (the watchdog's)."""
        return self._thread.is_alive() or self._thread.ident is None

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def queued_tokens(self) -> int:
        return self._tokens

    @property
    def pending(self) -> int:
        """Inputs reserved for tokenization and not yet submitted."""
        return self._expected

    def _full(self, n: int) -> Overloaded:
        self.m.dropped("queue_full").inc(n)
        return Overloaded(
            f"model {self.backend.name!r} queue is full ({len(self._queue)} inputs and {self._tokens} tokens "
            f"waiting, {self._expected} inputs being tokenized; limits {self.s.max_queue_size} inputs, "
            f"{self.s.max_queue_tokens} tokens); retry later",
            retry_after=retry_after_seconds(len(self._queue), self._rate))

    def _saturated(self, n: int) -> Overloaded | None:
        """The oldest input not yet answered (queued, or in the window being run) has waited over
        SHED_WAIT_SHARE of the deadline: new inputs would likely time out (504) after costing
        tokenization and a queue slot, so they are refused at once (429). Measured now, from the
        inputs themselves, so it clears as soon as the backlog does."""
        # A departed client's input waits for nobody: the first live one counts.
        head = next((it.enqueued for it in self._queue if not it.cancelled), None)
        times = [t for t in (head, self._in_progress) if t is not None]
        waited = time.perf_counter() - min(times) if times else 0.0
        if waited <= SHED_WAIT_SHARE * self.s.request_timeout_s:
            return None
        self.m.dropped("saturated").inc(n)
        return Overloaded(f"model {self.backend.name!r} is saturated: its oldest input has waited {waited:.1f} s "
                          f"(request deadline {self.s.request_timeout_s:g} s); retry later",
                          retry_after=max(1, math.ceil(waited / 2)))

    def reserve(self, n: int) -> None:
        """n inputs are about to be tokenized for this model and submitted soon; refused (429)
        if they would not fit the queue beside those already queued or being tokenized, or
        would wait past their deadline."""
        with self._cv:
            if self._stop or self._closed:
                raise Unavailable("the service is shutting down; retry on another replica")
            if len(self._queue) + self._expected + n > self.s.max_queue_size:
                raise self._full(n)
            if (busy := self._saturated(n)) is not None:
                raise busy
            self._expected += n

    def release(self, n: int) -> None:
        """n reserved inputs will not be submitted after all."""
        with self._cv:
            self._expected = max(0, self._expected - n)

    def submit(self, ids: list[list[int]], spec: OutputSpec, deadline: float,
               segments: list[int] | None = None) -> list[Item]:
        """Queue a request's inputs at once, or refuse them all (429): never half a request.
        Limits: ``max_queue_size`` inputs and ``max_queue_tokens`` real tokens (a request alone
        in the queue is taken whatever its tokens, else the largest could never run)."""
        loop = asyncio.get_running_loop()
        tokens = sum(min(len(x), self.backend.max_length) for x in ids)
        with self._cv:
            self._expected = max(0, self._expected - len(ids))
            if self._stop or self._closed:
                raise Unavailable("the service is shutting down; retry on another replica")
            if (len(self._queue) + len(ids) > self.s.max_queue_size
                    or (self._queue and self._tokens + tokens > self.s.max_queue_tokens)):
                raise self._full(len(ids))
            items = [Item(i, spec, deadline, loop.create_future(), loop) for i in ids]
            if segments is not None:
                for it, start in zip(items, segments, strict=True):
                    it.segment = start
            self._queue.extend(items)
            self._tokens += tokens
            self.m.queue_depth.set(len(self._queue))
            self._cv.notify()
        return items

    def abort_queued(self) -> int:
        """Fail every queued input with 503, and refuse new ones (the drain's time is nearly up):
        their clients get an answer rather than a cancelled connection. Returns how many."""
        with self._cv:
            self._closed = True
            items = list(self._queue)
            self._queue.clear()
            self._tokens = 0
            self.m.queue_depth.set(0)
        for it in items:
            self._fail(it, Unavailable("the service is shutting down before this input's turn; "
                                       "retry on another replica"))
        if items:
            self.m.dropped("shutdown").inc(len(items))
        return len(items)

    # -- worker side -------------------------------------------------------------------
    def _take_window(self) -> list[Item]:
        """Block until an input arrives, then gather until the batch closes."""
        s = self.s
        with self._cv:
            while not self._queue and not self._stop:
                self._cv.wait()
            if not self._queue:
                return []
            first = self._queue[0].enqueued
            close_at = first + s.max_wait_ms / 1000
            while True:
                n = len(self._queue)
                longest = max(len(it.ids) for it in list(self._queue)[: s.max_batch_size])
                full = n >= s.max_batch_size or n * min(longest, self.backend.max_length) >= s.max_batch_tokens
                left = close_at - time.perf_counter()
                # Nobody is tokenizing for this model: waiting would only add latency.
                if full or left <= 0 or self._stop or self._expected == 0:
                    break
                self._cv.wait(left)
            window: list[Item] = []
            tokens_longest = 0
            while self._queue and len(window) < s.max_batch_size:
                nxt = min(len(self._queue[0].ids), self.backend.max_length)
                longest = max(tokens_longest, nxt)
                if window and (len(window) + 1) * longest > s.max_batch_tokens:
                    break
                window.append(self._queue.popleft())
                self._tokens -= nxt
                tokens_longest = longest
            self.m.queue_depth.set(len(self._queue))
            return window

    def _split(self, window: list[Item]) -> list[list[Item]]:
        """Sorted by length, cut where a separate forward costs less than the padding it saves."""
        lengths = [min(len(it.ids), self.backend.max_length) for it in window]
        return [[window[i] for i in group]
                for group in plan(lengths, self.overhead_tokens, self.s.max_padding_ratio)]

    def _run(self) -> None:
        while True:
            window = self._take_window()
            if self._stop:
                for it in window:
                    self._fail(it, Unavailable("the service is shutting down; retry on another replica"))
                if not self._queue:
                    return
                continue
            if not window:
                continue
            now = time.monotonic()
            live = []
            for it in window:
                if it.cancelled:
                    self.m.dropped("cancelled").inc()
                elif now > it.deadline:
                    self.m.dropped("deadline").inc()
                    self._fail(it, DeadlineExceeded("the request's deadline passed while it was queued"))
                else:
                    live.append(it)
            self._in_progress = min((it.enqueued for it in live), default=None)
            for group in self._split(live):
                self._forward(group)
            self._in_progress = None

    def _forward(self, group: list[Item]) -> None:
        start = time.perf_counter()
        for it in group:
            it.queue_s = start - it.enqueued
            self.m.queue_wait.observe(it.queue_s)
        try:
            segments = [it.segment for it in group]
            pairs = (segments,) if any(segments) else ()  # only a batch holding a pair needs token types
            out = self.compute.call(self.backend.forward, [it.ids for it in group], [it.spec for it in group], *pairs)
        except Exception as e:  # a broken batch fails its own requests, never the worker
            if len(group) > 1:
                # One bad input must not fail the others batched with it: each again, alone.
                log.warning("forward of %d inputs failed for model %s (%s: %s); retrying them one by one",
                            len(group), self.backend.name, type(e).__name__, e)
                for it in group:
                    if not it.cancelled:
                        self._forward([it])
                return
            log.exception("forward failed for model %s", self.backend.name)
            self._fail(group[0], InferenceFailed(f"inference failed for this input: {type(e).__name__}"))
            return
        elapsed = time.perf_counter() - start
        lengths = [min(len(it.ids), self.backend.max_length) for it in group]
        padded = len(group) * max(lengths)
        self.m.inference.observe(elapsed)
        self.m.batch_size.observe(len(group))
        self.m.batch_tokens.observe(padded)
        self.m.padding_ratio.observe(padded / sum(lengths))
        self.m.inputs.inc(len(group))
        self.m.tokens.inc(sum(lengths))
        self._rate = 0.8 * self._rate + 0.2 * (len(group) / max(elapsed, 1e-6))
        # One wake-up of each event loop per forward, not one per input.
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for it, values in zip(group, out, strict=True):
            if not math.isfinite(sum(values)):  # NaN or inf anywhere in the row (JSON would say null)
                log.error("model %s produced a non-finite output for an input of %d tokens",
                          self.backend.name, len(it.ids))
                self._fail(it, InferenceFailed("the model's output for this input is not finite (NaN or inf)"))
                continue
            by_loop.setdefault(it.loop, []).append((it.future, Output(values, it.queue_s, elapsed)))
        for loop, results in by_loop.items():
            loop.call_soon_threadsafe(_set_results, results)

    @staticmethod
    def _fail(it: Item, exc: Exception) -> None:
        it.loop.call_soon_threadsafe(_set_exception, it.future, exc)


def _set_results(results: list[tuple[asyncio.Future, Output]]) -> None:
    for fut, value in results:
        if not fut.done():
            fut.set_result(value)


def _set_exception(fut: asyncio.Future, exc: Exception) -> None:
    if not fut.done():
        fut.set_exception(exc)


class Engine:
    """All models' batchers, plus the recent latencies /info reports."""

    def __init__(self, settings: Settings, backends: dict[str, Backend], metrics: Metrics,
                 compute: ComputeThread) -> None:
        self.settings = settings
        self.metrics = {name: metrics.bind(b.name, b.role) for name, b in backends.items()}
        self.batchers = {name: Batcher(b, settings, self.metrics[name], compute) for name, b in backends.items()}
        self.recent: dict[str, deque[tuple[float, float]]] = {n: deque(maxlen=2048) for n in backends}
        for b in backends.values():
            info = b.info()
            metrics.model_info.labels(model=b.name, role=b.role).info(
                {k: str(info[k]) for k in ("family", "task", "layers", "hidden_size", "parameters", "device", "dtype")})

    def start(self) -> None:
        for b in self.batchers.values():
            b.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        for b in self.batchers.values():
            b.stop(timeout)

    def abort_queued(self) -> int:
        return sum(b.abort_queued() for b in self.batchers.values())

    def record_latency(self, name: str, seconds: float) -> None:
        self.recent[name].append((time.monotonic(), seconds))

    def live_percentiles(self, name: str, window_s: float = 300.0, last: int = 60) -> dict:
        """p50/p95 over the window, and its ``last`` latencies in arrival order (a sparkline's points)."""
        cutoff = time.monotonic() - window_s
        window = [s for t, s in self.recent[name] if t >= cutoff]
        xs = sorted(window)
        if not xs:
            return {"window_s": window_s, "count": 0, "p50_ms": None, "p95_ms": None, "recent_ms": []}

        def q(p: float) -> float:
            return round(xs[min(len(xs) - 1, int(p * len(xs)))] * 1000, 3)

        return {"window_s": window_s, "count": len(xs), "p50_ms": q(0.5), "p95_ms": q(0.95),
                "recent_ms": [round(s * 1000, 3) for s in window[-last:]]}

    async def run(self, name: str, ids: list[list[int]], spec: OutputSpec, timeout_s: float,
                  segments: list[int] | None = None) -> list[Output]:
        """Submit a request's inputs and wait for all of them, honouring the deadline."""
        deadline = time.monotonic() + timeout_s
        items = self.batchers[name].submit(ids, spec, deadline, segments)
        try:
            async with asyncio.timeout(timeout_s):
                if len(items) == 1:  # the common case, without gather's extra future
                    return [await items[0].future]
                return list(await asyncio.gather(*(it.future for it in items)))
        except TimeoutError:
            raise DeadlineExceeded(f"no result within the {timeout_s:g} s request deadline") from None
        finally:
            # Client gone or deadline: the worker skips what is still queued. (gather has
            # already cancelled the futures when the request itself was cancelled.)
            for it in items:
                if not it.future.done() or it.future.cancelled():
                    it.cancelled = True
                    it.future.cancel()
