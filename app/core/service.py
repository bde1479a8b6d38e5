"""The service: its lifecycle (a typed status), the models it serves, and the request steps
every inference route shares: resolve the model, tokenize, check limits, run through the engine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from .. import backends
from ..backends import Backend, OutputSpec
from ..settings import Settings
from .compute import ComputeThread
from .engine import Engine
from .errors import InvalidInput, TooManyInputs, Unavailable, UnknownModel, Unsupported
from .metrics import Metrics

log = logging.getLogger("app.service")

# Below this many characters a request is tokenized on the event loop: handing it to a thread
# costs more event-loop time (executor, future, wake-up) than the tokenizer takes for it.
INLINE_TOKENIZE_CHARS = 2048


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
    ids: list[list[int]]
    tokens: int  # real tokens after truncation
    tokenization_s: float


@dataclass(slots=True)
class Result:
    values: list[list[float]]  # per input: class scores in label order, or the embedding
    tokens: int
    timings: Timings


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

    @property
    def ready(self) -> bool:
        return self.status == Status.READY

    # -- lifecycle (load and shutdown run in a worker thread) -----------------------
    def load(self, before_load: Callable[[], None] | None = None) -> None:
        s = self.settings
        try:
            if before_load:
                before_load()
            self.compute = compute = ComputeThread(s.threads)
            for spec in s.models:
                t0 = time.perf_counter()
                self.backends[spec.name] = compute.call(backends.load, spec, s)
                info = self.backends[spec.name].info()
                log.info("loaded model %s (%s) from %s: backend %s, precision %s, in %.2fs", spec.name, spec.role,
                         spec.path, info.get("backend"), info.get("precision"), time.perf_counter() - t0)
            self.engine = Engine(s, self.backends, self.metrics, compute)
            self._advance(Status.LOADING, Status.WARMING)
            if s.warmup:
                for b in self.backends.values():
                    t0 = time.perf_counter()
                    compute.call(b.warmup, s.max_batch_size)
                    log.info("warmed model %s in %.2fs", b.name, time.perf_counter() - t0)
            self.engine.start()
            self._advance(Status.WARMING, Status.READY)
        except Exception as e:  # reported by /ready and /health; the process stays up to say so
            log.exception("model loading failed")
            self.failure = f"{type(e).__name__}: {e}"
            self.status = Status.FAILED

    def _advance(self, expected: Status, to: Status) -> None:
        if self.status == expected:  # a drain that began meanwhile stays a drain
            self.status = to

    def drain(self) -> None:
        """Stop accepting new work (SIGTERM, shutdown); a failed service stays failed."""
        if self.status != Status.FAILED:
            self.status = Status.DRAINING

    def shutdown(self) -> None:
        self.drain()
        if self.engine:
            self.engine.stop()
        if self.compute:
            self.compute.stop()

    # -- request steps ----------------------------------------------------------------
    def backend(self, name: str | None) -> Backend:
        if self.status not in (Status.READY, Status.DRAINING):  # draining: accepted requests still finish
            reason = self.failure if self.status == Status.FAILED else self.status
            raise Unavailable(f"service not ready ({reason})")
        name = name or self.settings.default_name
        if name not in self.backends:
            raise UnknownModel(f"unknown model {name!r}; available: {sorted(self.backends)}")
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

    async def prepare(self, backend: Backend, texts: list[str], truncate: bool) -> Prepared:
        s = self.settings
        if len(texts) > s.max_client_batch_size:
            raise TooManyInputs(f"{len(texts)} inputs in one request; the limit is {s.max_client_batch_size}")
        assert self.engine is not None
        t0 = time.perf_counter()
        batcher = self.engine.batchers[backend.name]
        batcher.expect(len(texts))
        try:
            if sum(len(t) for t in texts) <= INLINE_TOKENIZE_CHARS:
                ids = backend.tokenize(texts)
            else:
                ids = await asyncio.to_thread(backend.tokenize, texts)
        except BaseException:
            batcher.expect(-len(texts))
            raise
        tok_s = time.perf_counter() - t0
        self.engine.metrics[backend.name].tokenization.observe(tok_s)
        if not truncate:
            too_long = [(i, len(x)) for i, x in enumerate(ids) if len(x) > backend.max_length]
            if too_long:
                batcher.expect(-len(texts))
                i, n = too_long[0]
                raise InvalidInput(f"inputs[{i}] has {n} tokens, over model {backend.name!r}'s max length "
                                   f"{backend.max_length}; shorten it or send truncate=true")
        tokens = sum(min(len(x), backend.max_length) for x in ids)
        return Prepared(backend, ids, tokens, tok_s)

    async def run(self, prep: Prepared, spec: OutputSpec) -> Result:
        assert self.engine is not None
        name = prep.backend.name
        gauge = self.engine.metrics[name].in_flight
        gauge.inc()
        try:
            outs = await self.engine.run(name, prep.ids, spec, self.settings.request_timeout_s)
        finally:
            gauge.dec()
        timings = Timings(prep.tokenization_s, max(o.queue_s for o in outs), max(o.inference_s for o in outs))
        return Result([o.values for o in outs], prep.tokens, timings)
