"""Domain exception -> status code, and the one error body: {"error": ..., "error_type": ...}.

Every error the API sends is written by ``render`` (exception handlers and the middleware
alike); a new domain exception gets its status by one line in ``STATUS``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ..core import errors as core
from .deps import Unauthorized
from .record import RequestRecord


class SlowBody(core.ServiceError):
    """The request body did not arrive within ``body_timeout_s`` (an HTTP-layer concern)."""


class HeadersTooLarge(core.ServiceError):
    """The request line and headers exceed ``max_header_bytes`` (an HTTP-layer concern)."""


class BadPath(core.ServiceError):
    """The request path holds a control character (an HTTP-layer concern)."""


class NoRoute(core.ServiceError):
    """No route matches the request path exactly (an HTTP-layer concern)."""


log = logging.getLogger("app.errors")

# Most specific first: the first class the exception is an instance of wins.
STATUS: list[tuple[type[Exception], int, str]] = [
    (core.InvalidInput, 422, "validation"),
    (core.TooManyInputs, 413, "payload_too_large"),
    (core.UnknownModel, 404, "not_found"),
    (NoRoute, 404, "not_found"),
    (BadPath, 400, "validation"),
    (core.Unsupported, 400, "unsupported"),
    (Unauthorized, 401, "unauthorized"),
    (SlowBody, 408, "timeout"),
    (HeadersTooLarge, 431, "payload_too_large"),
    (core.Overloaded, 429, "overloaded"),
    (core.Unavailable, 503, "overloaded"),
    (core.LoadFailed, 503, "internal"),
    (core.DeadlineExceeded, 504, "timeout"),
    (core.InferenceFailed, 500, "internal"),
]

_HTTP_TYPES = {401: "unauthorized", 404: "not_found", 405: "unsupported", 413: "payload_too_large",
               415: "unsupported", 429: "overloaded", 504: "timeout"}


def status_of(exc: core.ServiceError) -> tuple[int, str]:
    for cls, status, error_type in STATUS:
        if isinstance(exc, cls):
            return status, error_type
    return 500, "internal"


def headers_of(exc: core.ServiceError) -> dict[str, str]:
    headers = {}
    if (retry := getattr(exc, "retry_after", None)) is not None:
        headers["Retry-After"] = str(retry)
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    return headers


def render(status: int, error_type: str, message: str, headers: dict[str, str] | None = None,
           record: RequestRecord | None = None) -> Response:
    """The one error body; notes the error type on the request's record for metrics and the log."""
    if record is not None:
        record.error_type = error_type
    return Response(orjson.dumps({"error": message, "error_type": error_type}), status_code=status,
                    headers=headers, media_type="application/json")


def render_exception(exc: core.ServiceError, record: RequestRecord | None = None) -> Response:
    status, error_type = status_of(exc)
    message = str(exc)
    if status >= 500 and record is not None and status != 503:  # the id finds the log lines
        message = f"{message} (request id {record.request_id})"
    return render(status, error_type, message, headers_of(exc), record)


MAX_DESCRIBED = 5  # validation errors spelled out; the rest are counted


def _describe(errors: list[dict]) -> str:
    parts = []
    for e in errors[:MAX_DESCRIBED]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body",))
        msg = e.get("msg", "invalid")
        if e.get("type") == "json_invalid":
            msg = "request body is not valid JSON"
        parts.append(f"{loc[:100]}: {msg[:300]}" if loc else msg[:300])
    if len(errors) > MAX_DESCRIBED:
        parts.append(f"and {len(errors) - MAX_DESCRIBED} more errors")
    return "; ".join(parts)


def install(app: FastAPI) -> None:
    @app.exception_handler(core.ServiceError)
    async def _service(request: Request, exc: core.ServiceError) -> Response:
        return render_exception(exc, RequestRecord.of(request))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        return render_validation(exc.errors(), RequestRecord.of(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        error_type = _HTTP_TYPES.get(exc.status_code, "validation" if exc.status_code < 500 else "internal")
        return render(exc.status_code, error_type, str(exc.detail), getattr(exc, "headers", None),
                      RequestRecord.of(request))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        return render_unexpected(RequestRecord.of(request))


def render_validation(errors: Sequence[Any], record: RequestRecord | None) -> Response:
    return render(422, "validation", _describe(list(errors)), record=record)


def render_unexpected(record: RequestRecord | None) -> Response:
    """A bug, not a client error: logged with its traceback (call from an except block)."""
    rid = record.request_id if record else "-"
    log.exception("unhandled error, request_id=%s", rid)
    return render(500, "internal", f"internal error (request id {rid})", record=record)
