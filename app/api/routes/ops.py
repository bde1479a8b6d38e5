"""GET /health (liveness), /ready (readiness), /info, /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ... import __version__
from ...core.errors import LoadFailed, Unavailable
from ..deps import Authorized, AuthorizedUnlessOpen, ServiceDep
from ..inference import json_response

router = APIRouter(tags=["operations"])


@router.get("/health", summary="Liveness: 503 if loading failed, a worker thread died or a forward hangs",
            dependencies=[AuthorizedUnlessOpen])
async def health(service: ServiceDep) -> Response:
    # A short word only: the details (paths, checkpoint keys) are in the log and in /info.
    if (problem := service.unhealthy()) is not None:
        raise LoadFailed(f"unhealthy: {problem}")
    return json_response({"status": "ok"})


@router.get("/ready", summary="Readiness: 200 once every model is loaded and warmed; 503 while draining",
            dependencies=[AuthorizedUnlessOpen])
async def ready(service: ServiceDep) -> Response:
    if service.ready:
        return json_response({"status": "ready"})
    raise Unavailable(f"not ready: {service.status}")


@router.get("/metrics", summary="Prometheus metrics", dependencies=[AuthorizedUnlessOpen])
async def metrics(service: ServiceDep) -> Response:
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/info", summary="Models, batching settings, version, live latency", dependencies=[Authorized])
async def info(service: ServiceDep) -> Response:
    s = service.settings
    models = []
    # A snapshot: the loader thread adds backends while /info may be asked.
    for b in list(service.backends.values()):
        entry = b.info() | {"serves": list(b.serves)}
        if service.engine:
            entry["latency"] = service.engine.live_percentiles(b.name)
            entry["forward_overhead_tokens"] = round(service.engine.batchers[b.name].overhead_tokens, 1)
        models.append(entry)
    return json_response({
        "version": __version__,
        "status": service.status,
        "failure": service.failure,
        "unhealthy": service.unhealthy(),
        "default_model": s.default_name,
        "models": models,
        "batching": {
            "max_batch_size": s.max_batch_size, "max_batch_tokens": s.max_batch_tokens,
            "max_wait_ms": s.max_wait_ms, "max_padding_ratio": s.max_padding_ratio,
            "forward_overhead_tokens": s.forward_overhead_tokens,
            "max_queue_size": s.max_queue_size,
        },
        "limits": {
            "max_client_batch_size": s.max_client_batch_size, "max_body_bytes": s.max_body_bytes,
            "request_timeout_s": s.request_timeout_s,
        },
    })
