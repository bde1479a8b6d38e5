"""create_app(settings): the FastAPI app, its lifespan, its routers and its one middleware."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from . import __version__
from .api import errors
from .api.middleware import RequestContext
from .api.routes import routers
from .core.metrics import Metrics
from .core.service import Service
from .settings import Settings


def create_app(settings: Settings, before_load: Callable[[], None] | None = None) -> FastAPI:
    """``before_load`` runs in the loader thread before any model loads (a test seam)."""
    metrics = Metrics(settings.max_batch_size, settings.max_batch_tokens)
    service = Service(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Load in the background: /health answers at once, /ready only once warmed. A daemon
        # thread of its own, not the default executor, whose threads the interpreter joins at
        # exit: a SIGTERM during a long load must not wait for it.
        threading.Thread(target=service.load, args=(before_load,), name="loader", daemon=True).start()
        try:
            yield
        finally:
            service.drain()  # a no-op after SIGTERM, which started the drain and its clock
            # The load stops at its next step; whatever is left of graceful_timeout_s bounds the wait.
            await asyncio.to_thread(service.loaded.wait, service.drain_left())
            await asyncio.to_thread(service.shutdown)

    # The API's documentation tells whoever can reach it what to send: closed when a key guards
    # the API, unless expose_docs says otherwise.
    docs = settings.expose_docs if settings.expose_docs is not None else not settings.api_key
    app = FastAPI(
        title="distilbert-serve",
        version=__version__,
        summary="BERT teacher and DistilBERT student: classify, embed, compare.",
        lifespan=lifespan,
        # FastAPI's OpenTelemetry hooks look the global providers up on every request (4% of the
        # event loop's time in a profile); the service has its own Prometheus metrics.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        **({} if docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}),
    )
    app.state.service = service
    errors.install(app)
    for router in routers:
        app.include_router(router)
    app.add_middleware(RequestContext, service=service, fastapi_app=app)
    return app
