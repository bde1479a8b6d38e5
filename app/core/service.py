"""The service: its lifecycle (a typed status), the models it serves, and the request steps
every inference route shares: resolve the model, tokenize, check limits, run through the engine.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum

from .. import backends
from ..backends import Backend, OutputSpec
from ..backends.base import PAIR_SPECIALS, Pair, Text, longest_first
from ..settings import Settings
from .batching import measure_overhead
from .compute import ComputeThread, arena_limit_from_environment, limit_malloc_arenas
from .engine import Engine
from .errors import DeadlineExceeded, InvalidInput, TooManyInputs, Unavailable, UnknownModel, Unsupported
from .metrics import Metrics

log = logging.getLogger("app.service")

# Below this many characters a request is tokenized on the event loop: handing it to a thread
# costs more event-loop time (executor, future, wake-up) than the tokenizer takes for it.
INLINE_TOKENIZE_CHARS = 2048

# Queued inputs are failed with 503 once this share of graceful_timeout_s has passed in a drain,
# so their clients get an answer before the server cancels whatever is still running.
DRAIN_ABORT_SHARE = 0.8


class Status(StrEnum):
    LOADING = "loading"
    WARMING = "warming"
    READY = "ready"
    DRAINING = "draining"  # accepted requests finish; new ones are refused
    FAILED = "failed"


@dataclass(slots=True)
class Timings:
    tokenization_s: float = 0.0
    queue_s: float = 0.0
    inference_s: float = 0.0


@dataclass(slots=True)
class Prepared:
    """A request's inputs, tokenized and within the limits, ready for the engine."""

    backend: Backend
    ids: list[list[int]]  # a pair as [CLS] a [SEP] b [SEP]
    tokens: int  # real tokens after truncation, both segments of a pair
    tokenization_s: float
    segments: list[int] | None = None  # per input where a pair's second segment starts (0: a text); None: no pair


@dataclass(slots=True)
class Tokenized:
    """One input as the model would see it (/tokenize): ids, their tokens and character offsets."""

    ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]  # in the input's own text (text or text_pair); (0, 0) for a special token
    type_ids: list[int] | None  # a pair's segments; None for a single text
    truncated: bool


@dataclass(slots=True)
class Result:
    values: list[list[float]]  # per input: class scores in label order, or the embedding
    tokens: int
    timings: Timings


def settle_heap() -> None:
    """Move everything loading created (models, tokenizers, the app: about 200,000 objects) out of the
    garbage collector's sight. A full collection walks every tracked object, a quarter of a second here
    with the event loop stopped, a few times a minute under load: the worst /health probe and the p99
    tail. Frozen, they are still freed by reference counting; a collection walks only what requests create."""
    gc.collect()
    gc.freeze()


class Service:
    """Everything the API needs; built by create_app, loaded by the lifespan."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.backends: dict[str, Backend] = {}
        self.engine: Engine | None = None
        self.compute: ComputeThread | None = None
        self.status = Status.LOADING
        self.failure: str | None = None
        self.loaded = threading.Event()  # load() has returned, however it ended
        self.drain_deadline: float | None = None  # time.monotonic() by which the shutdown must be over
        self._stopping = False  # shutdown() began: stopped threads are expected, not a fault
        self._tokenizers: dict[str, ThreadPoolExecutor] = {}

    @property
    def ready(self) -> bool:
        return self.status == Status.READY

    # -- lifecycle (load and shutdown run in a worker thread) -----------------------
    def load(self, before_load: Callable[[], None] | None = None) -> None:
        s = self.settings
        try:
            if before_load:
                before_load()
            if self._draining("before loading"):
                return
            if limit_malloc_arenas(s.malloc_arenas):  # before the compute, runtime and tokenizer threads start
                log.info("at most %d malloc arenas", s.malloc_arenas)
            elif s.malloc_arenas and arena_limit_from_environment():
                log.info("malloc arenas: the environment's limit stands (malloc_arenas=%d not applied)",
                         s.malloc_arenas)
            self.compute = compute = ComputeThread(s.threads, s.heap_trim_interval_s)
            for spec in s.models:
                if self._draining(f"before loading model {spec.name}"):
                    return
                t0 = time.perf_counter()
                self.backends[spec.name] = compute.call(backends.load, spec, s)
                info = self.backends[spec.name].info()
                log.info("loaded model %s (%s) from %s: backend %s, precision %s, in %.2fs", spec.name, spec.role,
                         spec.path, info.get("backend"), info.get("precision"), time.perf_counter() - t0)
            self._tokenizers = {name: ThreadPoolExecutor(s.tokenize_workers, thread_name_prefix=f"tokenize-{name}")
                                for name in self.backends}
            self.engine = Engine(s, self.backends, self.metrics, compute)
            self._advance(Status.LOADING, Status.WARMING)
            if s.warmup:
                for b in self.backends.values():
                    if self._draining(f"before warming model {b.name}"):
                        return
                    t0 = time.perf_counter()
                    compute.call(b.warmup, s.max_batch_size)
                    log.info("warmed model %s in %.2fs", b.name, time.perf_counter() - t0)
            if s.forward_overhead_tokens is None:
                for b in self.backends.values():
                    if self._draining(f"before timing model {b.name}"):
                        return
                    overhead = compute.call(forward_overhead, b)
                    self.engine.batchers[b.name].overhead_tokens = overhead
                    log.info("model %s: one forward costs as much as %.0f padded tokens", b.name, overhead)
            self.engine.start()
            settle_heap()
            self._advance(Status.WARMING, Status.READY)
        except Exception as e:  # reported by /ready and /health; the process stays up to say so
            log.exception("model loading failed")
            self.failure = f"{type(e).__name__}: {e}"
            self.status = Status.FAILED
        finally:
            self.loaded.set()

    def _draining(self, where: str) -> bool:
        """A drain began while loading: stop here rather than load what will never serve."""
        if self.status == Status.DRAINING:
            log.info("shutting down %s: the rest of the load is skipped", where)
            return True
        return False

    def _advance(self, expected: Status, to: Status) -> None:
        if self.status == expected:  # a drain that began meanwhile stays a drain
            self.status = to

    def drain(self) -> None:
        """Stop accepting new work (SIGTERM, shutdown); a failed service stays failed. The first
        call starts the clock of ``graceful_timeout_s``, which bounds the whole shutdown."""
        if self.status != Status.FAILED:
            self.status = Status.DRAINING
        if self.drain_deadline is None:
            grace = self.settings.graceful_timeout_s
            self.drain_deadline = time.monotonic() + grace
            timer = threading.Timer(grace * DRAIN_ABORT_SHARE, self._abort_queued)
            timer.daemon = True
            timer.start()

    def _abort_queued(self) -> None:
        """The drain's time is nearly up: queued inputs and requests waiting for a tokenizer are
        answered 503 now, rather than cut off when the server cancels what is left."""
        for pool in self._tokenizers.values():
            pool.shutdown(wait=False, cancel_futures=True)
        if self.engine is not None and (n := self.engine.abort_queued()):
            log.warning("drain time nearly up: %d queued inputs answered 503", n)

    def drain_left(self) -> float:
        """Seconds left of the drain's budget (the whole budget before a drain began)."""
        if self.drain_deadline is None:
            return self.settings.graceful_timeout_s
        return max(0.0, self.drain_deadline - time.monotonic())

    def shutdown(self) -> None:
        """Stop the workers within what is left of the drain's budget; threads still busy after it
        are daemons and end with the process."""
        self.drain()
        self._stopping = True
        for pool in self._tokenizers.values():
            pool.shutdown(wait=False, cancel_futures=True)
        if self.engine:
            self.engine.stop(timeout=self.drain_left())
        if self.compute:
            self.compute.stop(timeout=self.drain_left())

    @property
    def idle(self) -> bool:
        """No thread of ours is still working: the load has returned and the compute thread ended."""
        return self.loaded.is_set() and (self.compute is None or not self.compute.alive)

    def unhealthy(self) -> str | None:
        """Why the process should be restarted, in a word or two; None while it is healthy. A
        dead worker thread or a forward that hangs past ``watchdog_forward_s`` (a stuck device)
        would otherwise leave every request waiting while /health said ok."""
        if self.status == Status.FAILED:
            return "model loading failed"
        if self._stopping:
            return None
        if self.compute is not None and not self.compute.alive:
            return "compute thread stopped"
        if self.engine is not None and not all(b.alive for b in self.engine.batchers.values()):
            return "batcher thread stopped"
        busy = self.compute.busy_since if self.compute is not None else None
        if (busy is not None and self.status in (Status.READY, Status.DRAINING)
                and time.monotonic() - busy > self.settings.watchdog_forward_s):
            return "forward hung"
        return None

    # -- request steps ----------------------------------------------------------------
    def backend(self, name: str | None) -> Backend:
        if self.status not in (Status.READY, Status.DRAINING):  # draining: accepted requests still finish
            # A word to the client; the failure itself (paths, checkpoint keys) is in the log and /info.
            reason = "model loading failed" if self.status == Status.FAILED else self.status
            raise Unavailable(f"service not ready ({reason})")
        name = name or self.settings.default_name
        if name not in self.backends:
            raise UnknownModel(f"unknown model {name[:64]!r}; available: {sorted(self.backends)}")
        return self.backends[name]

    def backend_with_role(self, role: str) -> Backend:
        self.backend(None)  # not ready: Unavailable
        for b in self.backends.values():
            if b.role == role:
                return b
        raise Unsupported(f"no model with role {role!r} is configured; name one with '{role}'")

    def backend_for(self, task: str, name: str | None = None, role: str | None = None) -> Backend:
        """The entry that answers ``task`` for the named model (else the role's first model, else the
        default): that entry if it serves the task, else the entry of the same role that does."""
        chosen = self.backend(name) if name or not role else self.backend_with_role(role)
        if task in chosen.serves:
            return chosen
        for b in self.backends.values():
            if b.role == chosen.role and task in b.serves:
                return b
        raise Unsupported(f"model {chosen.name!r} serves {', '.join(chosen.serves)}, and no {chosen.role} model is "
                          f"configured for {task}; add an entry with task={task!r}")

    @staticmethod
    def require_classifier(backend: Backend) -> None:
        if not backend.can_classify:
            raise Unsupported(f"model {backend.name!r} has no classification head ({backend.task}); "
                              "use /embed, or a model with a classifier")

    def deadline(self) -> float:
        """A new request's deadline (time.monotonic())."""
        return time.monotonic() + self.settings.request_timeout_s

    async def prepare(self, backend: Backend, texts: list[Text], truncate: bool, deadline: float) -> Prepared:
        """Tokenize (on the model's own bounded executor, within the deadline) and apply the
        length rules: with ``truncate`` each input is cut to ``max_length`` ids (a pair's longer segment
        first, as ``longest_first``), else an input over it is a 422. No input ever holds more ids than
        that past this point. An input may be a sentence pair (text, text_pair)."""
        s = self.settings
        if len(texts) > s.max_client_batch_size:
            raise TooManyInputs(f"{len(texts)} inputs in one request; the limit is {s.max_client_batch_size}")
        has_pairs = not all(isinstance(t, str) for t in texts)
        if has_pairs and not backend.pairs_supported:
            raise Unsupported(f"model {backend.name!r} runs on ONNX Runtime, whose export takes no token_type_ids, "
                              "and BERT needs them to tell a pair's two texts apart; send single texts, or serve "
                              "this model with backend torch for pairs")
        assert self.engine is not None
        t0 = time.perf_counter()
        batcher = self.engine.batchers[backend.name]
        batcher.reserve(len(texts))  # 429 here if the queue could not take them anyway
        try:
            if sum(_chars(t) for t in texts) <= INLINE_TOKENIZE_CHARS:
                rows, exact = backend.tokenize_inputs(texts)
            else:
                rows, exact = await self._tokenize(backend, texts, deadline)
            ids, segments = cut_inputs(backend, rows, exact, truncate)
        except BaseException:
            batcher.release(len(texts))
            raise
        tok_s = time.perf_counter() - t0
        self.engine.metrics[backend.name].tokenization.observe(tok_s)
        return Prepared(backend, ids, sum(len(x) for x in ids), tok_s, segments if has_pairs else None)

    async def tokenize_only(self, backend: Backend, texts: list[Text], truncate: bool,
                            deadline: float) -> list[Tokenized]:
        """What ``prepare`` would hand the engine for these inputs, with each id's token and offsets; the
        same limits and length rules (422 over max_length without truncate), no queue and no forward."""
        s = self.settings
        if len(texts) > s.max_client_batch_size:
            raise TooManyInputs(f"{len(texts)} inputs in one request; the limit is {s.max_client_batch_size}")
        self.backend(backend.name)  # not ready: Unavailable
        t0 = time.perf_counter()
        flat = [part for t in texts for part in ((t,) if isinstance(t, str) else t)]
        if sum(len(t) for t in flat) <= INLINE_TOKENIZE_CHARS:
            encs, exact = backend.pieces_bounded(flat)
        else:
            encs, exact = await self._tokenize(backend, flat, deadline, backend.pieces_bounded)
        tok = backend.tokenizer
        rows: list[list[int] | Pair] = []
        whole: list[bool] = []
        k = 0
        for t in texts:
            if isinstance(t, str):
                rows.append([tok.cls_id, *encs[k].ids, tok.sep_id])
                whole.append(exact[k])
                k += 1
            else:
                rows.append(Pair(encs[k].ids, encs[k + 1].ids))
                whole.append(exact[k] and exact[k + 1])
                k += 2
        ids, segments = cut_inputs(backend, rows, whole, truncate)
        out, k = [], 0
        special = ([tok.backend.id_to_token(tok.cls_id)], [tok.backend.id_to_token(tok.sep_id)], [(0, 0)])
        for t, row, start, ok in zip(texts, ids, segments, whole, strict=True):
            if isinstance(t, str):
                a, keep = encs[k], len(row) - 2
                k += 1
                out.append(Tokenized(row, [*special[0], *a.tokens[:keep], *special[1]],
                                     [*special[2], *a.offsets[:keep], *special[2]], None, keep < len(a) or not ok))
                continue
            a, b = encs[k], encs[k + 1]
            k += 2
            ka, kb = start - 2, len(row) - start - 1
            out.append(Tokenized(row, [*special[0], *a.tokens[:ka], *special[1], *b.tokens[:kb], *special[1]],
                                 [*special[2], *a.offsets[:ka], *special[2], *b.offsets[:kb], *special[2]],
                                 [0] * start + [1] * (len(row) - start), ka < len(a) or kb < len(b) or not ok))
        self.engine.metrics[backend.name].tokenization.observe(time.perf_counter() - t0)  # type: ignore[union-attr]
        return out

    async def _tokenize(self, backend: Backend, texts: list[Text],
                        deadline: float, fn: Callable | None = None) -> tuple[list, list[bool]]:
        """On the model's own pool, within the deadline. A cancelled wait (the client left) also
        takes a job that has not started off the pool's queue."""
        try:
            job = self._tokenizers[backend.name].submit(fn or backend.tokenize_inputs, texts)
        except RuntimeError:  # the pool was shut down: the drain's time is up
            raise Unavailable("the service is shutting down; retry on another replica") from None
        try:
            async with asyncio.timeout_at(_loop_time(deadline)):
                return await asyncio.wrap_future(job)
        except TimeoutError:
            job.cancel()
            raise DeadlineExceeded(f"tokenization did not finish within the {self.settings.request_timeout_s:g} s "
                                   "request deadline") from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if job.cancelled() and task is not None and not task.cancelling():  # cancelled by the drain
                raise Unavailable("the service is shutting down; retry on another replica") from None
            raise

    async def run(self, prep: Prepared, spec: OutputSpec, deadline: float) -> Result:
        assert self.engine is not None
        name = prep.backend.name
        left = deadline - time.monotonic()
        if left <= 0:
            self.engine.batchers[name].release(len(prep.ids))
            raise DeadlineExceeded(f"no result within the {self.settings.request_timeout_s:g} s request deadline")
        gauge = self.engine.metrics[name].in_flight
        gauge.inc()
        try:
            outs = await self.engine.run(name, prep.ids, spec, left, prep.segments)
        finally:
            gauge.dec()
        timings = Timings(prep.tokenization_s, max(o.queue_s for o in outs), max(o.inference_s for o in outs))
        return Result([o.values for o in outs], prep.tokens, timings)


def forward_overhead(backend: Backend) -> float:
    """One forward's fixed cost in padded tokens for this model, measured here (app/core/batching.py)."""
    tok = backend.tokenizer
    spec = backend.default_output
    return measure_overhead(lambda ids: backend.forward(ids, [spec] * len(ids)), tok.unk_id, tok.cls_id, tok.sep_id)


def _loop_time(deadline: float) -> float:
    """A time.monotonic() deadline on the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())


def _chars(t: Text) -> int:
    return len(t) if isinstance(t, str) else len(t[0]) + len(t[1])


def cut_inputs(backend: Backend, rows: list[list[int] | Pair], exact: list[bool],
               truncate: bool) -> tuple[list[list[int]], list[int]]:
    """Each input at most ``max_length`` ids; over-length a 422 unless truncating. A text keeps its first
    ids and its last ([SEP]); a pair is assembled as [CLS] a [SEP] b [SEP] after ``longest_first`` cut its
    segments. Returns the ids and, per input, where a pair's second segment starts (0: a text)."""
    n = backend.max_length
    ids: list[list[int]] = []
    segments: list[int] = []
    for i, row in enumerate(rows):
        if isinstance(row, Pair):
            total = len(row.a) + len(row.b) + PAIR_SPECIALS
            if (total > n or not exact[i]) and not truncate:
                size = f"has {total} tokens ({len(row.a)} + {len(row.b)} and 3 special)" if exact[i] else "is longer"
                raise InvalidInput(f"inputs[{i}] (a text pair) {size}, over model {backend.name!r}'s max length "
                                   f"{n}; shorten it or send truncate=true (the longer text is cut first)")
            keep_a, keep_b = longest_first(len(row.a), len(row.b), n - PAIR_SPECIALS)
            joined, start = backend.tokenizer.pair_ids(row.a[:keep_a], row.b[:keep_b])
            ids.append(joined)
            segments.append(start)
            continue
        if len(row) > n or not exact[i]:
            if not truncate:
                size = f"has {len(row)} tokens" if exact[i] else "is longer"
                raise InvalidInput(f"inputs[{i}] {size}, over model {backend.name!r}'s max length {n}; "
                                   "shorten it or send truncate=true")
            if len(row) > n:
                row = row[: n - 1] + row[-1:]
        ids.append(row)
        segments.append(0)
    return ids, segments
