"""FastAPI dependencies as Annotated aliases: the service, and the API-key check."""

from __future__ import annotations

import secrets
from typing import Annotated, cast

from fastapi import Depends, Request

from .errors import ApiError
from .service import Service
from .settings import Settings


def get_service(request: Request) -> Service:
    return cast(Service, request.app.state.service)


def get_settings(request: Request) -> Settings:
    return get_service(request).settings


ServiceDep = Annotated[Service, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def require_api_key(request: Request, settings: SettingsDep) -> None:
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


Authorized = Depends(require_api_key)
