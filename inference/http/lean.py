"""A route served without FastAPI's per-request machinery, for the hottest path (POST /predict).

FastAPI's request handler solves a route's dependency tree on every request, with its caches,
checks and exit stacks, even when every dependency only reads memory: for /predict's seven that
was about a third of the route's Python time (``cProfile``). With eight clients sharing one
accelerator call, eight of those sit between the end of one call and the start of the next, on
the loop that also writes the eight answers (BENCHMARKS.md, "A lean /predict": 0.67-0.79x the
loop's CPU per request, ``python -m tools.bench.loop``).

A ``LeanRoute`` is declared like any route, so its OpenAPI operation, security and responses
come from the one declaration, and it runs the same dependencies in the same order, with the
same per-request cache. It resolves them with a plan built once, when the route is, for the
kinds of dependency that only read memory: ``async def`` functions (or objects with an async
``__call__``, like ``HTTPBearer``) whose parameters are the ``Request`` (or ``HTTPConnection``)
or other such dependencies. A route that needs anything else (path, query, header, cookie or
body parameters, a ``Response`` or ``BackgroundTasks`` parameter, security scopes, a plain or
``yield`` dependency) fails when it is built, naming what, so a route never silently skips a
check. Its endpoint returns a ``Response``. With dependency overrides set (tests), FastAPI's
own handler serves it, so overrides mean what they always do.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import fastapi.routing
from fastapi import Request
from fastapi.dependencies.models import Dependant
from starlette.responses import Response

from inference.http.bodies import BoundedBodyRoute, ParsedJsonRequest, check_json_body

#: What a plan cannot supply, as (Dependant attribute, what to call it in the error).
_UNSUPPORTED = (
    ("path_params", "path parameters"),
    ("query_params", "query parameters"),
    ("header_params", "header parameters"),
    ("cookie_params", "cookie parameters"),
    ("body_params", "a body parameter"),
    ("response_param_name", "a Response parameter"),
    ("background_tasks_param_name", "a BackgroundTasks parameter"),
    ("security_scopes_param_name", "a SecurityScopes parameter"),
    ("websocket_param_name", "a WebSocket parameter"),
)


@dataclass(frozen=True)
class Call:
    """One dependency (or the endpoint): what to await, with which arguments."""

    call: Callable[..., Awaitable[Any]]
    #: The parameter of the caller this value fills; None for a route's ``dependencies=``.
    name: str | None
    #: The parameters that receive the request (annotated ``Request`` or ``HTTPConnection``).
    request_params: tuple[str, ...]
    arguments: tuple[Call, ...]
    cached: bool

    async def run(self, request: Request, cache: dict[int, Any]) -> Any:
        """Await the dependencies in declaration order (each cached one once per request, as
        FastAPI does), then this call."""
        kwargs: dict[str, Any] = {}
        for argument in self.arguments:
            key = id(argument.call)
            if argument.cached and key in cache:
                value = cache[key]
            else:
                value = await argument.run(request, cache)
                if argument.cached:
                    cache[key] = value
            if argument.name is not None:
                kwargs[argument.name] = value
        for name in self.request_params:
            kwargs[name] = request
        return await self.call(**kwargs)


def plan(dependant: Dependant, where: str) -> Call:
    """The plan of ``dependant``'s tree; ``TypeError`` naming what a plan cannot serve."""
    call = dependant.call
    label = f"{where}: {getattr(call, '__name__', type(call).__name__)}"
    needs = [text for attribute, text in _UNSUPPORTED if getattr(dependant, attribute, None)]
    if needs:
        raise TypeError(f"{label} needs {', '.join(needs)}, which a LeanRoute does not resolve")
    if call is None or not (
        inspect.iscoroutinefunction(call)
        or inspect.iscoroutinefunction(type(call).__call__)  # an instance with async __call__
    ):
        raise TypeError(f"{label} is not an async def, which a LeanRoute needs")
    return Call(
        call=call,
        name=dependant.name,
        request_params=tuple(
            name
            for name in (dependant.request_param_name, dependant.http_connection_param_name)
            if name is not None
        ),
        arguments=tuple(plan(sub, where) for sub in dependant.dependencies),
        cached=dependant.use_cache,
    )


def _effective(route: fastapi.routing.APIRoute) -> Any:
    """What FastAPI's own ``get_route_handler`` reads: recent FastAPI (0.165 in the lock) builds
    a route included in a router inside an "effective route" context that adds the including
    router's dependencies; older releases copied the route with them. A test includes a router
    with dependencies of its own, so a FastAPI that changes this fails it."""
    context_var = getattr(fastapi.routing, "_effective_route_context_var", None)
    context = context_var.get() if context_var is not None else None
    if context is not None and getattr(context, "original_route", None) is route:
        return context
    return route


class LeanRoute(BoundedBodyRoute):
    """A route whose dependencies are resolved by a prebuilt plan (see the module's docstring);
    its JSON body is bounded first, as on every ``BoundedBodyRoute``."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        fastapi_handler = super().get_route_handler()
        effective = _effective(self)
        endpoint = plan(effective.dependant, f"{', '.join(sorted(self.methods))} {self.path}")
        overrides = effective.dependency_overrides_provider

        async def handle(request: Request) -> Response:
            if overrides is not None and getattr(overrides, "dependency_overrides", None):
                return await fastapi_handler(request)
            request = ParsedJsonRequest(request.scope, request.receive)
            await check_json_body(request, parse=False)
            response = await endpoint.run(request, {})
            if not isinstance(response, Response):
                raise TypeError(f"{self.path}: a LeanRoute's endpoint returns a Response")
            return response

        return handle
