"""What a protocol declares, so the app can serve it without knowing its paths or its errors.

A protocol (an API shape a client ecosystem already speaks: native, OpenAI images, Replicate,
Cog) is one package here that exports one ``Protocol``. ``inference.http.app`` assembles a
list of them: it includes their routers, gives the larger body limit to the paths they say may
carry images, adds their error bodies and document edits to the OpenAPI document, and runs
their lifespans (once each, when several protocols share one). Adding a protocol is its package
and one entry in that list.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.responses import Response

from inference.errors import InferenceError
from inference.http.bodies import BoundedBodyRoute
from inference.http.errors import CLIENT_GONE, INTERNAL_ERROR, log_unexpected
from inference.http.openapi import ENVELOPE, PROTOCOL_DESCRIPTIONS, OpenAPIEdit

#: Turns an exception raised in a route (body validation, auth, domain errors) into the
#: protocol's response, or None to leave it to the app's handlers.
ErrorRenderer = Callable[[Exception], Response | None]
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


@dataclass(frozen=True, eq=False)
class ErrorShape:
    """A protocol's own error body: how its routes render errors, and how the document says so.

    Build the protocol's routers with ``route_class=shape.route_class`` and document their
    errors with ``shape.responses(...)``; the app adds ``model`` to the document's schemas.
    """

    render: ErrorRenderer
    media_type: str
    model: type[BaseModel]

    @cached_property
    def route_class(self) -> type[APIRoute]:
        """A route class whose errors ``render`` shapes, unexpected ones too (a 500 in the
        protocol's own shape, logged); a client that left is the app's to count. JSON bodies
        are bounded before they are parsed (``BoundedBodyRoute``)."""
        render = self.render

        class ProtocolRoute(BoundedBodyRoute):
            def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
                handler = super().get_route_handler()

                async def handle(request: Request) -> Response:
                    try:
                        return await handler(request)
                    except Exception as exc:
                        response = render(exc)
                        if response is not None:
                            return response
                        if isinstance(exc, CLIENT_GONE):
                            raise  # the app's handler counts it; nobody reads an answer
                        log_unexpected(request, exc)
                        internal = render(InferenceError(INTERNAL_ERROR))
                        return internal or Response(status_code=500)

                return handle

        return ProtocolRoute

    def responses(self, *statuses: int) -> dict[int | str, dict[str, Any]]:
        """``responses=`` for a route's errors in this shape. The body-size limit (413) is the
        app's middleware, answered in the app's envelope on every path."""
        responses: dict[int | str, dict[str, Any]] = {}
        for status in statuses:
            media, name = ENVELOPE if status == 413 else (self.media_type, self.model.__name__)
            responses[status] = {
                "description": PROTOCOL_DESCRIPTIONS[status],
                "content": {media: {"schema": {"$ref": f"#/components/schemas/{name}"}}},
            }
        return responses


@dataclass(frozen=True, eq=False)
class Protocol:
    """Everything the app needs to serve one protocol; see the module docstring.

    ``image_paths`` are path templates as the routes write them (``/predictions/{id}``): a
    POST or PUT to one of them may carry images, so it gets MAX_IMAGE_BODY_BYTES instead of
    MAX_BODY_BYTES. ``errors`` is None for a protocol that answers in the app's own envelope.
    """

    name: str
    routers: tuple[APIRouter, ...]
    image_paths: tuple[str, ...] = ()
    errors: ErrorShape | None = None
    openapi: OpenAPIEdit | None = None
    lifespan: Lifespan | None = None


def paths_of(router: APIRouter, *endpoints: Callable[..., Any]) -> tuple[str, ...]:
    """The paths (its prefix included) at which ``router`` serves ``endpoints``: a protocol
    names its image-carrying routes by their handlers instead of restating their paths."""
    routes = [route for route in router.routes if isinstance(route, APIRoute)]
    missing = [e.__name__ for e in endpoints if all(r.endpoint is not e for r in routes)]
    if missing:
        raise ValueError(f"{', '.join(missing)} is not a route of this router; pass its handler")
    return tuple(route.path for route in routes if route.endpoint in endpoints)
