"""Dependencies shared by the routers, as ``Annotated`` aliases: the service, the settings and
the bearer-token check (the app factory puts the first two on ``app.state``); and the wait that
every protocol's generating route uses, which gives up when its client has gone."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable
from typing import Annotated, TypeVar

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from inference.fleet import Fleet
from inference.http.errors import ClientDisconnected
from inference.service import Service
from inference.settings import Settings

T = TypeVar("T")


# Every dependency below only reads memory, so each is ``async def``: FastAPI runs a plain
# ``def`` dependency in its thread pool, and those hops (four per generating request) cost more
# than the work, and most under load, when the loop waits on the GIL for each thread's answer.


async def get_service(request: Request) -> Service:
    return request.app.state.service


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_fleet(request: Request) -> Fleet:
    return request.app.state.fleet


#: The header that keeps a client on one version of a model while weights stand, for protocols
#: without a field of their own for it (OpenAI's ``user`` comes first there).
SESSION_HEADER = "X-Session-Id"
#: The response header naming the version that served a request (``model@version``).
VERSION_HEADER = "X-Model-Version"


def session_key(request: Request) -> str | None:
    """The request's sticky key for routing: its X-Session-Id header, if any."""
    return request.headers.get(SESSION_HEADER) or None


ServiceDep = Annotated[Service, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
FleetDep = Annotated[Fleet, Depends(get_fleet)]
BearerToken = Annotated[
    HTTPAuthorizationCredentials | None,
    Security(HTTPBearer(auto_error=False, description="Needed when AUTH_TOKEN is set.")),
]


async def require_token(settings: SettingsDep, credentials: BearerToken) -> None:
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


async def rate_limit(request: Request) -> None:
    """429 once this client has used its share (RATE_LIMIT_PER_MINUTE; off when 0)."""
    limit = request.app.state.rate_limit
    if limit is not None:
        limit.check(request)


#: ``dependencies=`` of every route that needs the token; they are rate limited too.
PROTECTED = [Depends(require_token), Depends(rate_limit)]


async def until_disconnect(request: Request, awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` unless the client disconnects first, in which case cancel it.

    Cancelling the service call abandons the request, so the batcher drops it (or stops its
    batch between steps) instead of computing images nobody will read.
    """
    task = asyncio.ensure_future(awaitable)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    raise ClientDisconnected
