"""One error body everywhere: {"error": ..., "error_type": ...} with the right status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .engine import EngineError, Overloaded

log = logging.getLogger("app.errors")


class ApiError(Exception):
    def __init__(self, status: int, error_type: str, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message
        self.headers = headers or {}


def error_response(status: int, error_type: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "error_type": error_type}, status_code=status, headers=headers)


def _note(request: Request, error_type: str) -> None:
    request.state.error_type = error_type


_HTTP_TYPES = {401: "unauthorized", 404: "not_found", 405: "unsupported", 413: "payload_too_large",
               415: "unsupported", 429: "overloaded", 504: "timeout"}


def _describe(errors: list[dict]) -> str:
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body",))
        msg = e.get("msg", "invalid")
        if e.get("type") == "json_invalid":
            msg = "request body is not valid JSON"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        _note(request, exc.error_type)
        return error_response(exc.status, exc.error_type, exc.message, exc.headers)

    @app.exception_handler(EngineError)
    async def _engine(request: Request, exc: EngineError) -> JSONResponse:
        _note(request, exc.error_type)
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Overloaded) else None
        return error_response(exc.status, exc.error_type, str(exc), headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        _note(request, "validation")
        return error_response(422, "validation", _describe(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = _HTTP_TYPES.get(exc.status_code, "validation" if exc.status_code < 500 else "internal")
        _note(request, error_type)
        return error_response(exc.status_code, error_type, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = getattr(request.state, "request_id", "-")
        log.exception("unhandled error, request_id=%s", rid)
        _note(request, "internal")
        return error_response(500, "internal", f"internal error (request id {rid})")
