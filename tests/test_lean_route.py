"""``LeanRoute`` (``inference.http.lean``): the same dependencies, in the same order, with the
same answers as FastAPI's own handler, and a refusal at build time of what it cannot resolve.
(No ``from __future__ import annotations``: FastAPI must see the local dependencies.)"""

from collections.abc import AsyncIterator
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, Header, Request, Security
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from inference.http.bodies import BoundedBodyRoute
from inference.http.lean import LeanRoute
from inference.http.protocols.native import routes as native_routes


def build(route_class: type, **include: Any) -> tuple[FastAPI, list[str]]:
    """An app whose POST /run has a shared dependency, an uncached one, a bearer token and a
    router-level dependency; every call is logged in order."""
    calls: list[str] = []

    async def shared(request: Request) -> str:
        calls.append("shared")
        return request.headers.get("x-who", "nobody")

    async def fresh() -> int:
        calls.append("fresh")
        return len(calls)

    async def gate(who: Annotated[str, Depends(shared)]) -> None:
        calls.append("gate")
        if who == "intruder":
            raise HTTPException(401, "no", headers={"WWW-Authenticate": "Bearer"})

    async def first(
        who: Annotated[str, Depends(shared)], n: Annotated[int, Depends(fresh, use_cache=False)]
    ) -> str:
        calls.append("first")
        return f"{who}:{n}"

    bearer = HTTPBearer(auto_error=False)

    async def run(
        one: Annotated[str, Depends(first)],
        n: Annotated[int, Depends(fresh, use_cache=False)],
        token: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
        request: Request,
    ) -> Response:
        calls.append("run")
        given = token.credentials if token else None
        return JSONResponse({"one": one, "n": n, "token": given, "path": request.url.path})

    router = APIRouter(dependencies=[Depends(gate)], route_class=route_class)
    router.add_api_route("/run", run, methods=["POST"])
    app = FastAPI()
    app.include_router(router, **include)
    app.state.gate = gate
    return app, calls


REQUESTS = [
    {"headers": {"x-who": "ann"}},
    {"headers": {"x-who": "ann", "authorization": "Bearer s3cret"}},
    {"headers": {"x-who": "intruder"}},
    {"headers": {"x-who": "ann"}, "content": b'{"a": [[[[[[', "params": {"q": "1"}},
]


@pytest.mark.parametrize("request_kwargs", REQUESTS)
def test_same_answers_and_calls_as_fastapi(request_kwargs: dict[str, Any]) -> None:
    answers = []
    for route_class in (BoundedBodyRoute, LeanRoute):
        app, calls = build(route_class)
        with TestClient(app) as client:
            answer = client.post("/run", **request_kwargs)
        answers.append((answer.status_code, dict(answer.headers), answer.content, calls))
    assert answers[0] == answers[1]


def test_shared_dependency_runs_once_and_uncached_twice() -> None:
    app, calls = build(LeanRoute)
    with TestClient(app) as client:
        answer = client.post("/run", headers={"x-who": "ann"})
    assert answer.json() == {"one": "ann:3", "n": 5, "token": None, "path": "/run"}
    assert calls == ["shared", "gate", "fresh", "first", "fresh", "run"]


def test_dependencies_of_the_including_router_run() -> None:
    async def closed() -> None:
        raise HTTPException(403, "closed")

    app, calls = build(LeanRoute, dependencies=[Depends(closed)])
    with TestClient(app) as client:
        answer = client.post("/run", headers={"x-who": "ann"})
    assert answer.status_code == 403 and "run" not in calls


def test_overrides_are_served_by_fastapi() -> None:
    app, _ = build(LeanRoute)

    async def let_in() -> None:
        return None

    async def deny() -> None:
        raise HTTPException(418, "overridden")

    app.dependency_overrides[app.state.gate] = deny
    with TestClient(app) as client:
        assert client.post("/run").status_code == 418
        app.dependency_overrides[app.state.gate] = let_in
        assert client.post("/run", headers={"x-who": "intruder"}).status_code == 200


def _plain() -> None:
    return None


async def _generator() -> AsyncIterator[None]:
    yield None


class Body(BaseModel):
    x: int


async def _query(q: int) -> Response:
    return Response()


async def _header(x_key: Annotated[str, Header()]) -> Response:
    return Response()


async def _body(body: Body) -> Response:
    return Response()


async def _response(response: Response) -> Response:
    return response


async def _path(item: str) -> Response:
    return Response()


async def _background(tasks: BackgroundTasks) -> Response:
    return Response()


async def _plain_dependency(_: Annotated[None, Depends(_plain)]) -> Response:
    return Response()


async def _yield_dependency(_: Annotated[None, Depends(_generator)]) -> Response:
    return Response()


def _sync_endpoint() -> Response:
    return Response()


@pytest.mark.parametrize(
    ("path", "endpoint", "says"),
    [
        ("/q", _query, "query parameters"),
        ("/h", _header, "header parameters"),
        ("/b", _body, "a body parameter"),
        ("/r", _response, "a Response parameter"),
        ("/t", _background, "a BackgroundTasks parameter"),
        ("/p/{item}", _path, "path parameters"),
        ("/plain", _plain_dependency, "_plain is not an async def"),
        ("/yield", _yield_dependency, "_generator is not an async def"),
        ("/sync", _sync_endpoint, "_sync_endpoint is not an async def"),
    ],
)
def test_refuses_at_build_what_it_cannot_resolve(path: str, endpoint: Any, says: str) -> None:
    router = APIRouter(route_class=LeanRoute)
    with pytest.raises(TypeError, match=says) as refused:
        router.add_api_route(path, endpoint, methods=["POST"])
    assert f"POST {path}" in str(refused.value)


def test_an_endpoint_that_returns_no_response_fails() -> None:
    async def data() -> dict[str, int]:
        return {"a": 1}

    router = APIRouter(route_class=LeanRoute)
    router.add_api_route("/data", data, methods=["POST"])
    app = FastAPI()
    app.include_router(router)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/data").status_code == 500


def test_predict_is_served_lean() -> None:
    """The hot path stays on the lean handler (the accel benchmark's 8-client figure)."""
    predict = [r for r in native_routes.router.routes if getattr(r, "path", "") == "/predict"]
    assert len(predict) == 1 and isinstance(predict[0], LeanRoute)
