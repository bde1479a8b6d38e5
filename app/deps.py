"""FastAPI dependencies as Annotated aliases: the service, and the API-key check.

All ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, which cost
every request three thread hand-offs (visible in a py-spy profile of the event loop).
"""

from __future__ import annotations

import secrets
from typing import Annotated, cast

from fastapi import Depends, Request

from .errors import ApiError
from .service import Service
from .settings import Settings


async def get_service(request: Request) -> Service:
    return cast(Service, request.app.state.service)


async def get_settings(request: Request) -> Settings:
    return (await get_service(request)).settings


ServiceDep = Annotated[Service, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def check_api_key(request: Request, settings: Settings) -> None:
    """Bearer token check, active only when an api_key is configured."""
    if not settings.api_key:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "missing API key: send 'Authorization: Bearer <key>'",
                       {"WWW-Authenticate": "Bearer"})
    if not secrets.compare_digest(token.strip().encode(), settings.api_key.encode()):
        raise ApiError(401, "unauthorized", "invalid API key", {"WWW-Authenticate": "Bearer"})


async def require_api_key(request: Request, settings: SettingsDep) -> None:
    check_api_key(request, settings)


Authorized = Depends(require_api_key)
