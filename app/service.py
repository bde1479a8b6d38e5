"""The service's state and the request steps every inference route shares:
resolve the model, tokenize off the event loop, check limits, run through the engine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Request

from .backend import ModelBackend, OutputSpec, resolve_device, resolve_dtype
from .compute import ComputeThread
from .engine import Engine, Output
from .errors import ApiError
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger("app.service")


@dataclass
class Timings:
    tokenization_s: float = 0.0
    queue_s: float = 0.0
    inference_s: float = 0.0


@dataclass
class Prepared:
    backend: ModelBackend
    ids: list[list[int]]
    tokens: int
    timings: Timings = field(default_factory=Timings)


class Service:
    """Everything the routes need; built by create_app, filled in by the lifespan."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.backends: dict[str, ModelBackend] = {}
        self.engine: Engine | None = None
        self.compute: ComputeThread | None = None
        self.status = "loading"  # loading -> warming -> ready -> draining | failed
        self.failure: str | None = None
        self.started = time.time()

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    # -- lifecycle (called from the lifespan, in a worker thread) -------------------
    def load(self, before_load: Callable[[], None] | None = None) -> None:
        s = self.settings
        try:
            if before_load:
                before_load()
            self.compute = compute = ComputeThread(s.threads)
            device = resolve_device(s.device)
            dtype = resolve_dtype(s.dtype, device)
            for spec in s.models:
                t0 = time.perf_counter()
                self.backends[spec.name] = compute.call(ModelBackend, spec, device, dtype)
                log.info("loaded model %s (%s) from %s in %.2fs", spec.name, spec.role, spec.path,
                         time.perf_counter() - t0)
            self.engine = Engine(s, self.backends, self.metrics, compute)
            self.status = "warming"
            if s.warmup:
                for b in self.backends.values():
                    t0 = time.perf_counter()
                    compute.call(b.warmup, s.max_batch_size)
                    log.info("warmed model %s in %.2fs", b.name, time.perf_counter() - t0)
            self.engine.start()
            if self.status == "warming":
                self.status = "ready"
        except Exception as e:  # reported by /ready and /health; the process stays up to say so
            log.exception("model loading failed")
            self.failure = f"{type(e).__name__}: {e}"
            self.status = "failed"

    def shutdown(self) -> None:
        self.status = "draining"
        if self.engine:
            self.engine.stop()
        if self.compute:
            self.compute.stop()

    # -- request steps ----------------------------------------------------------------
    def backend(self, name: str | None) -> ModelBackend:
        if self.status not in ("ready", "draining"):  # draining: accepted requests still finish
            reason = self.failure if self.status == "failed" else self.status
            raise ApiError(503, "overloaded", f"service not ready ({reason})", {"Retry-After": "1"})
        name = name or self.settings.default_name
        if name not in self.backends:
            raise ApiError(404, "not_found", f"unknown model {name!r}; available: {sorted(self.backends)}")
        return self.backends[name]

    async def prepare(self, request: Request, backend: ModelBackend, texts: list[str],
                      truncate: bool) -> Prepared:
        s = self.settings
        request.state.model = backend.name
        request.state.role = backend.role
        request.state.inputs = len(texts)
        if len(texts) > s.max_client_batch_size:
            raise ApiError(413, "payload_too_large",
                           f"{len(texts)} inputs in one request; the limit is {s.max_client_batch_size}")
        t0 = time.perf_counter()
        batcher = self.engine.batchers[backend.name]  # type: ignore[union-attr]
        batcher.expect(len(texts))
        try:
            ids = await asyncio.to_thread(backend.tokenize, texts)
        except BaseException:
            batcher.expect(-len(texts))
            raise
        tok_s = time.perf_counter() - t0
        self.metrics.tokenization.labels(model=backend.name, role=backend.role).observe(tok_s)
        if not truncate:
            too_long = [(i, len(x)) for i, x in enumerate(ids) if len(x) > backend.max_length]
            if too_long:
                batcher.expect(-len(texts))
                i, n = too_long[0]
                raise ApiError(422, "validation",
                               f"inputs[{i}] has {n} tokens, over model {backend.name!r}'s max length "
                               f"{backend.max_length}; shorten it or send truncate=true")
        tokens = sum(min(len(x), backend.max_length) for x in ids)
        request.state.tokens = tokens
        return Prepared(backend, ids, tokens, Timings(tokenization_s=tok_s))

    async def run(self, request: Request, prep: Prepared, spec: OutputSpec) -> list[Output]:
        assert self.engine is not None
        b = prep.backend
        gauge = self.metrics.in_flight.labels(model=b.name, role=b.role)
        gauge.inc()
        try:
            outs = await _until_disconnect(
                request, self.engine.run(b.name, prep.ids, spec, self.settings.request_timeout_s))
        finally:
            gauge.dec()
        prep.timings.queue_s = max(o.queue_s for o in outs)
        prep.timings.inference_s = max(o.inference_s for o in outs)
        request.state.timings = prep.timings
        return outs


class ClientDisconnected(Exception):
    """The client went away before its result was ready."""


async def _until_disconnect(request: Request, work):
    """Run ``work``; if the client disconnects first, cancel it (queued inputs are dropped)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        raise ClientDisconnected()
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


