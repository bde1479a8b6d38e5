"""create_app(settings): the FastAPI app, its lifespan and its one ASGI middleware."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from . import __version__, errors
from .metrics import Metrics
from .routes import api_router
from .service import ClientDisconnected, Service
from .settings import Settings

access_log = logging.getLogger("app.access")
log = logging.getLogger("app")

INFERENCE_PATHS = ("/classify", "/embed", "/v1/embeddings", "/compare")


def create_app(settings: Settings, before_load: Callable[[], None] | None = None) -> FastAPI:
    """``before_load`` runs in the loader thread before any model loads (a test seam)."""
    metrics = Metrics(settings.max_batch_size, settings.max_batch_tokens)
    service = Service(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Load in the background: /health answers at once, /ready only once warmed.
        loader = asyncio.create_task(asyncio.to_thread(service.load, before_load))
        try:
            yield
        finally:
            service.status = "draining"
            await loader  # never leave a half-loaded model thread behind
            await asyncio.to_thread(service.shutdown)

    app = FastAPI(
        title="distilbert-serve",
        version=__version__,
        summary="BERT teacher and DistilBERT student: classify, embed, compare.",
        lifespan=lifespan,
    )
    app.state.service = service
    errors.install(app)
    app.include_router(api_router)
    app.add_middleware(RequestContext, service=service)
    return app


class RequestContext:
    """Pure ASGI middleware: request id, body limit, timing headers, metrics, one log line.

    Pure ASGI rather than BaseHTTPMiddleware: it adds no task per request and keeps the
    client-disconnect signal visible to the routes.
    """

    def __init__(self, app, service: Service) -> None:
        self.app = app
        self.service = service
        # uuid4's os.urandom cost 0.33 ms per call on the README's machine; an id only has to be
        # unique, so a generator seeded once from the OS draws them.
        self._rng = random.Random(os.urandom(16))

    def _new_id(self) -> str:
        return uuid.UUID(int=self._rng.getrandbits(128), version=4).hex

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        rid = headers.get("x-request-id", "")[:128] or self._new_id()
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        path = scope["path"]
        svc = self.service
        status_holder = {"status": 500}

        async def send_error(status: int, error_type: str, message: str, extra: dict | None = None):
            body = json.dumps({"error": message, "error_type": error_type}).encode()
            hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            hdrs += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
            state["error_type"] = error_type
            await send_wrapper({"type": "http.response.start", "status": status, "headers": hdrs})
            await send_wrapper({"type": "http.response.body", "body": body})

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                extra = [(b"x-request-id", rid.encode())]
                timings = state.get("timings")
                if timings is not None:
                    extra += [
                        (b"x-queue-time", f"{timings.queue_s * 1000:.3f}".encode()),
                        (b"x-tokenization-time", f"{timings.tokenization_s * 1000:.3f}".encode()),
                        (b"x-inference-time", f"{timings.inference_s * 1000:.3f}".encode()),
                    ]
                extra.append((b"x-total-time", f"{(time.perf_counter() - t0) * 1000:.3f}".encode()))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            if svc.status == "draining" and path in INFERENCE_PATHS:
                await send_error(503, "overloaded", "the service is shutting down; retry on another replica",
                                 {"Retry-After": "1"})
                return
            limit = svc.settings.max_body_bytes
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                await send_error(413, "payload_too_large",
                                 f"request body of {length} bytes exceeds the {limit}-byte limit")
                return
            # Read the body here (bounded), then replay it: chunked uploads are limited too.
            chunks, size = [], 0
            has_body = scope["method"] in ("POST", "PUT", "PATCH")
            if has_body:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        await send_error(413, "payload_too_large",
                                         f"request body exceeds the {limit}-byte limit")
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
            replayed = False

            async def replay():
                nonlocal replayed
                if has_body and not replayed:
                    replayed = True
                    return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                return await receive()

            try:
                await self.app(scope, replay, send_wrapper)
            except ClientDisconnected:
                status_holder["status"] = 499  # nginx's code for "client closed request"
                state["error_type"] = "cancelled"
        finally:
            self._finish(scope, state, path, status_holder["status"], time.perf_counter() - t0)

    def _finish(self, scope, state: dict, path: str, status: int, elapsed: float) -> None:
        model, role = state.get("model"), state.get("role")
        m = self.service.metrics
        if model and path in INFERENCE_PATHS:
            m.requests.labels(model=model, role=role, endpoint=path, status=str(status)).inc()
            if status < 400:
                m.request_duration.labels(model=model, role=role, endpoint=path).observe(elapsed)
                if self.service.engine and path != "/compare":  # compare spans two models
                    self.service.engine.record_latency(model, elapsed)
            else:
                m.errors.labels(model=model, role=role, endpoint=path,
                                error_type=state.get("error_type", "internal")).inc()
        elif path in INFERENCE_PATHS:  # rejected before a model was chosen (auth, validation, size)
            m.errors.labels(model="none", role="none", endpoint=path,
                            error_type=state.get("error_type", "validation")).inc()
        if path in ("/health", "/ready", "/metrics") and status < 400:
            return  # probes and scrapes would drown the log
        timings = state.get("timings")
        record = {
            "request_id": state.get("request_id"), "method": scope.get("method"), "path": path,
            "status": status, "model": model, "inputs": state.get("inputs"),
            "tokens": state.get("tokens"), "total_ms": round(elapsed * 1000, 3),
        }
        if timings is not None:
            record.update(tokenization_ms=round(timings.tokenization_s * 1000, 3),
                          queue_ms=round(timings.queue_s * 1000, 3),
                          inference_ms=round(timings.inference_s * 1000, 3))
        if status >= 400:
            record["error_type"] = state.get("error_type")
        access_log.info("%s %s %s", scope.get("method"), path, status, extra={"fields": record})
