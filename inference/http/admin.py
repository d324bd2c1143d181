"""The admin routes: watch a canary and move traffic between versions without a restart.

``GET /admin/models`` shows every model, version, live weight, loaded or not, queue depth and
requests served; ``PUT /admin/models/{name}/weights`` re-weights a model atomically
(``Registry.set_weights``: a request routes by the old table or the new one, never a mix).

The token is ADMIN_TOKEN, else AUTH_TOKEN, so a deployment can give operators a token its
clients do not have. With neither set the routes answer 404, as if absent: on an open server
anyone could otherwise move a deployment's traffic, and a 401 would advertise a door that has
no key.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.exceptions import HTTPException as StarletteHTTPException

from inference.errors import InvalidRequest
from inference.http.deps import BearerToken, FleetDep, SettingsDep
from inference.http.openapi import error_refs
from inference.settings import Settings


def admin_token(settings: Settings) -> bytes | None:
    """The token the admin routes want, or None when they are off."""
    token = settings.admin_token or settings.auth_token
    return token.get_secret_value().encode() if token is not None else None


def require_admin(settings: SettingsDep, credentials: BearerToken) -> None:
    """404 when no token is set (the routes are off), 401 without the right one."""
    expected = admin_token(settings)
    if expected is None:
        raise StarletteHTTPException(
            404, "Not Found: the admin routes are off; set ADMIN_TOKEN (or AUTH_TOKEN) to use them"
        )
    given = credentials.credentials.encode() if credentials else b""
    if not secrets.compare_digest(given, expected):
        raise StarletteHTTPException(
            401,
            "missing or wrong token: send 'Authorization: Bearer <ADMIN_TOKEN>' (AUTH_TOKEN "
            "when ADMIN_TOKEN is unset)",
            headers={"WWW-Authenticate": "Bearer"},
        )


router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=error_refs(401, 404),
)


@router.get("/models")
async def models(fleet: FleetDep) -> dict[str, Any]:
    """Every model: versions, live weights, loaded or not, queue depth, requests served."""
    return {"models": fleet.table()}


@router.put("/models/{name}/weights", responses=error_refs(422))
async def set_weights(name: str, request: Request, fleet: FleetDep) -> dict[str, Any]:
    """Re-weight a model's versions live: a JSON object {version: weight}; versions left out
    keep their weight. Answers the model's new weights."""
    try:
        weights = await request.json()
    except ValueError:
        weights = None
    if not isinstance(weights, dict):
        raise InvalidRequest(
            "weights",
            'the body must be a JSON object of version weights, e.g. {"v1": 50, "v2": 50}',
        )
    return {"model": name, "weights": fleet.registry.set_weights(name, weights)}
