"""The one typed record of a request, written by the routes, read by the middleware
(timing headers, metrics, the access log)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from ..core.service import Timings

SCOPE_KEY = "distil.record"


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    start: float  # time.perf_counter() when the request arrived
    inference: bool = False  # the route is an inference route (app/api/inference.py)
    route: str | None = None  # the path template of the route that runs it (app/api/routing.py)
    model: str | None = None
    role: str | None = None
    inputs: int | None = None
    tokens: int | None = None
    timings: Timings | None = None
    error_type: str | None = None
    body: bytes | None = None  # as the middleware read it (bounded), for the route to parse
    live_latency: bool = True  # counts towards /info's latency (not /compare, which spans two models)

    @staticmethod
    def of(conn: HTTPConnection) -> RequestRecord | None:
        """The record the middleware put in the ASGI scope (None outside it)."""
        return conn.scope.get(SCOPE_KEY)
