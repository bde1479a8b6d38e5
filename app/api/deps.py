"""FastAPI dependencies as Annotated aliases: the service, and the API-key check.

All ``async def`` and without sub-dependencies: FastAPI runs a plain ``def`` dependency in its
thread pool (three thread hand-offs per request in a py-spy profile of the event loop), and
each level of dependencies costs event-loop time on every request.
"""

from __future__ import annotations

import secrets
from typing import Annotated, cast

from fastapi import Depends, Request

from ..core.errors import ServiceError
from ..core.service import Service
from ..settings import Settings


class Unauthorized(ServiceError):
    """Missing or wrong API key (an HTTP-layer concern: the core has no notion of clients)."""


def service_of(request: Request) -> Service:
    return cast(Service, request.app.state.service)


async def get_service(request: Request) -> Service:
    return service_of(request)


ServiceDep = Annotated[Service, Depends(get_service)]


def check_authorization(header: str, settings: Settings) -> None:
    """Bearer token check of an Authorization header's value, active only with an api_key."""
    if not settings.api_key:
        return
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    if not secrets.compare_digest(token.strip().encode(), settings.api_key.encode()):
        raise Unauthorized("invalid API key")


def check_api_key(request: Request, settings: Settings) -> None:
    check_authorization(request.headers.get("authorization", ""), settings)


async def require_api_key(request: Request) -> None:
    check_api_key(request, service_of(request).settings)


async def require_api_key_unless_open(request: Request) -> None:
    """For the probes and /metrics: open unless ``auth_open_metrics`` is off."""
    settings = service_of(request).settings
    if not settings.auth_open_metrics:
        check_api_key(request, settings)


Authorized = Depends(require_api_key)
AuthorizedUnlessOpen = Depends(require_api_key_unless_open)
