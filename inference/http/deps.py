"""Dependencies shared by the routers, as ``Annotated`` aliases: the service, the settings and
the bearer-token check (the app factory puts the first two on ``app.state``)."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from inference.service import Service
from inference.settings import Settings


def get_service(request: Request) -> Service:
    return request.app.state.service


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


ServiceDep = Annotated[Service, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
BearerToken = Annotated[
    HTTPAuthorizationCredentials | None,
    Security(HTTPBearer(auto_error=False, description="Needed when AUTH_TOKEN is set.")),
]


def require_token(settings: SettingsDep, credentials: BearerToken) -> None:
    """401 unless AUTH_TOKEN is unset or the request carries it as a bearer token."""
    if settings.auth_token is None:
        return
    expected = settings.auth_token.get_secret_value().encode()
    given = credentials.credentials.encode() if credentials else b""
    if not secrets.compare_digest(given, expected):
        raise StarletteHTTPException(
            401,
            "missing or wrong token: send 'Authorization: Bearer <AUTH_TOKEN>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


def rate_limit(request: Request) -> None:
    """429 once this client has used its share (RATE_LIMIT_PER_MINUTE; off when 0)."""
    limit = request.app.state.rate_limit
    if limit is not None:
        limit.check(request)


#: ``dependencies=`` of every route that needs the token; they are rate limited too.
PROTECTED = [Depends(require_token), Depends(rate_limit)]
