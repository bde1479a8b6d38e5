"""GET /health (liveness), /ready (readiness), /info, /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import __version__
from ..deps import ServiceDep, check_api_key, require_api_key
from ..errors import error_response

router = APIRouter(tags=["operations"])


async def _open_unless_configured(request: Request) -> None:
    service = request.app.state.service
    if not service.settings.auth_open_metrics:
        check_api_key(request, service.settings)


@router.get("/health", summary="Liveness: the process serves HTTP (503 only if loading failed)",
            dependencies=[Depends(_open_unless_configured)])
async def health(service: ServiceDep) -> JSONResponse:
    if service.status == "failed":
        return error_response(503, "internal", f"model loading failed: {service.failure}")
    return JSONResponse({"status": "ok"})


@router.get("/ready", summary="Readiness: 200 once every model is loaded and warmed; 503 while draining",
            dependencies=[Depends(_open_unless_configured)])
async def ready(service: ServiceDep) -> JSONResponse:
    if service.ready:
        return JSONResponse({"status": "ready"})
    detail = service.failure if service.status == "failed" else service.status
    resp = error_response(503, "overloaded", f"not ready: {detail}", {"Retry-After": "1"})
    return resp


@router.get("/metrics", summary="Prometheus metrics", dependencies=[Depends(_open_unless_configured)])
async def metrics(service: ServiceDep) -> Response:
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/info", summary="Models, batching settings, version, live latency",
            dependencies=[Depends(require_api_key)])
async def info(service: ServiceDep) -> JSONResponse:
    s = service.settings
    models = []
    for b in service.backends.values():
        entry = b.info()
        if service.engine:
            entry["latency"] = service.engine.live_percentiles(b.name)
        models.append(entry)
    return JSONResponse({
        "version": __version__,
        "status": service.status,
        "default_model": s.default_name,
        "models": models,
        "batching": {
            "max_batch_size": s.max_batch_size, "max_batch_tokens": s.max_batch_tokens,
            "max_wait_ms": s.max_wait_ms, "max_padding_ratio": s.max_padding_ratio,
            "max_queue_size": s.max_queue_size,
        },
        "limits": {
            "max_client_batch_size": s.max_client_batch_size, "max_body_bytes": s.max_body_bytes,
            "request_timeout_s": s.request_timeout_s,
        },
    })
