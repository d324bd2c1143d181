"""Modal with a registry, over HTTP: the default version's pool serves the web app and routes
every other version's requests to that version's pool (``deploy.remote_builder``).

As in tests/test_modal_fleet.py the class is a fake; here each fake pool runs the jobs it
receives through a real local ``Service`` of its version (``deploy.serve_jobs``, what the
pool's container runs), so the pixels that come back are the ones the pool would send.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from inference.errors import InvalidRequest
from inference.http.app import create_app
from inference.registry import Registry, VersionRef
from inference.service import Service
from inference.settings import Settings
from tests.test_modal import _no_modal_credentials  # noqa: F401 (autouse: offline, no token)
from tests.test_modal_fleet import FakeStore, registry_file

pytestmark = pytest.mark.filterwarnings("ignore:The .* function is executing locally:UserWarning")

SMALL = {"prompt": "a fox", "width": 64, "height": 64, "steps": 2, "seed": 7}


class PoolCalls:
    """What every fake pool received: (version, method, jobs), in order."""

    def __init__(self, settings: Settings) -> None:
        self.registry = Registry.from_settings(settings)
        self.services: dict[str, Service] = {}
        self.calls: list[tuple[str, str, list[Any]]] = []
        self.failing: set[str] = set()

    def service(self, version: str) -> Service:
        if version not in self.services:
            model, _, name = version.partition("@")
            settings = self.registry.version(VersionRef(model, name)).settings
            self.services[version] = Service.from_settings(settings).start()
        return self.services[version]


class FakeRemote:
    def __init__(self, calls: PoolCalls, version: str, method: str) -> None:
        self.calls, self.version, self.method = calls, version, method

    def remote(self, *args: Any) -> Any:
        import deploy
        from inference.models.remote import Description

        self.calls.calls.append((self.version, self.method, list(args)))
        if self.version in self.calls.failing:
            raise ConnectionError(f"pool {self.version} is down")
        service = self.calls.service(self.version)
        if self.method == "describe":
            return pickle.loads(pickle.dumps(Description.of(service.model)))
        jobs = pickle.loads(pickle.dumps(args[0]))  # Modal pickles both ways
        return pickle.loads(pickle.dumps(deploy.serve_jobs(service, jobs)))


class FakeHandle:
    def __init__(self, calls: PoolCalls, version: str) -> None:
        self.describe = FakeRemote(calls, version, "describe")
        self.generate_jobs = FakeRemote(calls, version, "generate_jobs")


class FakeCls:
    def __init__(self, calls: PoolCalls) -> None:
        self.calls = calls

    def with_options(self, **options: Any) -> FakeCls:
        return self

    def __call__(self, version: str = "") -> FakeHandle:
        return FakeHandle(self.calls, version)


@pytest.fixture
def router(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[Any, PoolCalls]]:
    """The web app of the default version's pool, with fake pools behind it."""
    import deploy

    settings = Settings(models_file=registry_file(tmp_path))
    calls = PoolCalls(settings)
    monkeypatch.setattr(deploy, "Model", FakeCls(calls))
    monkeypatch.setattr(deploy, "POOLS", deploy.pool_settings(Registry.from_settings(settings)))
    default = Service.from_settings(deploy.served_settings(settings, "")).start()
    fleet = deploy.served_fleet(settings, "", default, FakeStore())
    try:
        with TestClient(create_app(settings, fleet=fleet)) as client:
            yield client, calls
    finally:
        fleet.stop()
        default.stop()
        for service in calls.services.values():
            service.stop()


def generated(calls: PoolCalls) -> list[tuple[str, list[Any]]]:
    return [(version, args) for version, method, args in calls.calls if method == "generate_jobs"]


def test_a_non_default_version_runs_in_its_own_pool(router: tuple[Any, PoolCalls]) -> None:
    client, calls = router
    png = {"accept": "image/png"}
    response = client.post("/predict", json={**SMALL, "model": "final"}, headers=png)
    assert response.status_code == 200, response.text
    assert response.headers["x-model-version"] == "final@v1"
    [(version, [jobs])] = generated(calls)
    assert version == "final@v1" and [job.seeds for job in jobs] == [(7,)]
    # The pool's pixels, encoded once here: the very bytes the version serves locally.
    assert response.content == calls.service("final@v1").generate(SMALL).images[0].data
    stand_in = client.app.state.fleet.service(VersionRef("final", "v1"))
    names = {arbiter.device for arbiter in stand_in.engine.arbiters}
    # One stand-in per call in flight, each its own device: none waits on another's turn.
    count = len(stand_in.engine.arbiters)
    assert count > 1 and len(names) == count and all(n.startswith("modal:final@v1") for n in names)


def test_the_default_version_is_served_here_without_a_hop(router: tuple[Any, PoolCalls]) -> None:
    client, calls = router
    for model in ("draft@v1", None):
        body = {**SMALL, **({"model": model} if model else {})}
        response = client.post("/predict", json=body)
        assert response.status_code == 200, response.text
        assert response.headers["x-model-version"] == "draft@v1"
    assert calls.calls == []  # no pool was asked anything


def test_modal_generate_routes_a_request_naming_its_model_through_the_fleet(
    router: tuple[Any, PoolCalls],
) -> None:
    """``Model.generate`` (and so ``.remote()`` callers) with a registry: the router's fleet
    serves a request naming another version in that version's pool, one naming none here."""
    client, calls = router
    fleet = client.app.state.fleet
    result = fleet.generate({**SMALL, "model": "final"})
    assert result.version == "final@v1"
    [(version, _)] = generated(calls)
    assert version == "final@v1"
    assert result.images[0].data == calls.service("final@v1").generate(SMALL).images[0].data
    assert fleet.generate(dict(SMALL)).version == "draft@v1"
    assert len(generated(calls)) == 1  # the default version: served here, no hop
    with pytest.raises(InvalidRequest, match="did you mean 'final'"):
        fleet.generate({**SMALL, "model": "finale"})


def test_an_invalid_request_is_refused_before_any_generation_in_a_pool(
    router: tuple[Any, PoolCalls],
) -> None:
    client, calls = router
    response = client.post("/predict", json={**SMALL, "model": "draft@v2", "steps": 5000})
    assert response.status_code == 422, response.text
    assert "steps" in response.text
    assert generated(calls) == []
    before = list(calls.calls)
    unknown = client.post("/predict", json={**SMALL, "model": "drafty"})
    assert unknown.status_code == 404, unknown.text
    assert calls.calls == before


def test_a_failing_pool_fails_only_its_requests(router: tuple[Any, PoolCalls]) -> None:
    client, calls = router
    assert client.post("/predict", json={**SMALL, "model": "final"}).status_code == 200
    calls.failing.add("final@v1")
    failed = client.post("/predict", json={**SMALL, "model": "final", "seed": 9})
    assert failed.status_code >= 500 and "Traceback" not in failed.text
    assert client.post("/predict", json={**SMALL, "model": "draft@v2"}).status_code == 200
    assert client.post("/predict", json={**SMALL, "model": "draft@v1"}).status_code == 200
    calls.failing.clear()
    healed = client.post("/predict", json={**SMALL, "model": "final", "seed": 10})
    assert healed.status_code == 200


def test_a_pool_down_at_first_use_fails_its_load_and_the_next_request_retries(
    router: tuple[Any, PoolCalls],
) -> None:
    client, calls = router
    calls.failing.add("draft@v2")
    refused = client.post("/predict", json={**SMALL, "model": "draft@v2"})
    assert refused.status_code == 503 and "draft@v2" in refused.text
    calls.failing.clear()
    assert client.post("/predict", json={**SMALL, "model": "draft@v2"}).status_code == 200


def test_a_job_the_pools_model_refuses_is_a_4xx_for_that_request_only() -> None:
    import deploy
    from tests.conftest import make_service

    class Picky:
        def check(self, job: Any) -> None:
            raise InvalidRequest("steps", f"steps: {job.steps} is not allowed by this model")

    service = make_service()
    try:
        job = service.job(SMALL)
        assert len(deploy.serve_jobs(service, [job])[0][0]) == 1
        service.model.check = Picky().check  # type: ignore[method-assign]
        with pytest.raises(InvalidRequest, match="steps: 2"):
            deploy.serve_jobs(service, [job])
    finally:
        service.stop()
