"""Several models behind one endpoint (issue 23, phase 2): the fleet serves a registry.

In-process tests drive ``Fleet`` directly (thousands of requests in seconds); the HTTP tests run
``python -m inference serve`` with MODELS_FILE=examples/models.toml and talk to it with the
ecosystems' own clients. The example's two ``draft`` versions are the mock model with different
weights (v1 gamma 0.82 beta 0.15, the embedded default; v2 gamma 0.6 beta 0.3): the same request
and seed draw different pixels, so an image says which version drew it, and each version's
image equals, byte for byte, the one a lone server of that version draws.
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from inference.errors import NotReady
from inference.fleet import Fleet
from inference.registry import UnknownModel, Version, VersionRef
from inference.service import Service
from inference.settings import Settings
from tests.servers import ROOT, inference_server

EXAMPLE = ROOT / "examples" / "models.toml"
TOKEN = "admin-secret"
SMALL = {"prompt": "a red fox", "width": 64, "height": 64, "steps": 2}


def example_fleet(max_loaded: int | None = None, **settings: Any) -> Fleet:
    fleet = Fleet.from_settings(
        Settings(models_file=EXAMPLE, max_loaded_models=max_loaded, **settings)
    )
    fleet.default.start()
    return fleet


def stop(fleet: Fleet) -> None:
    fleet.stop()
    fleet.default.stop()


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def within_binomial(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    """Whether ``count`` successes of ``n`` is within ``sigmas`` standard deviations of p."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


# -- in process ----------------------------------------------------------------------------


async def serve(fleet: Fleet, model: str | None, sticky: str | None = None, **fields: Any):
    async with fleet.serving(model, sticky) as routed:
        result = await routed.service.submit({**SMALL, **fields})
    return routed.ref, result


def test_the_two_mock_versions_draw_different_pixels_each_its_own() -> None:
    fleet = example_fleet()
    try:
        images = {}
        for pin in ("draft@v1", "draft@v2"):
            ref, result = asyncio.run(serve(fleet, pin, seed=3))
            assert str(ref) == pin
            images[pin] = pixels(result.images[0].data)
            # A lone service of that version (what a server without a registry would be).
            alone = Service.from_settings(fleet.registry.version(ref).settings).start()
            try:
                expected = pixels(alone.generate({**SMALL, "seed": 3}).images[0].data)
            finally:
                alone.stop()
            assert np.array_equal(images[pin], expected)
        differing = np.any(images["draft@v1"] != images["draft@v2"], axis=-1)
        assert differing.sum() > 0.5 * differing.size  # most pixels, not a stray one
    finally:
        stop(fleet)


def test_each_version_validates_with_its_own_defaults_and_limits() -> None:
    fleet = example_fleet()

    async def jobs() -> dict[str, Any]:
        found = {}
        for name in ("final", "draft@v1"):
            async with fleet.serving(name) as routed:
                found[name] = routed.service.job({"prompt": "x"})
        return found

    try:
        found = asyncio.run(jobs())
        assert found["final"].steps == 40  # final's default_steps; draft keeps the deployment's
        assert (
            found["draft@v1"].steps == fleet.default.validator.defaults.steps != 40
        )  # the mock's own
        assert fleet.service(VersionRef("final", "v1")).settings.max_batch_size == 2
    finally:
        stop(fleet)


def test_a_90_10_split_over_2000_requests_is_within_binomial_bounds() -> None:
    fleet = example_fleet(result_cache_mb=0)

    async def burst() -> Counter[str]:
        served: Counter[str] = Counter()
        for start in range(0, 2000, 50):
            outcomes = await asyncio.gather(
                *(serve(fleet, "draft", seed=start + i) for i in range(50))
            )
            served.update(ref.version for ref, _ in outcomes)
        return served

    try:
        served = asyncio.run(burst())
        assert sum(served.values()) == 2000
        assert within_binomial(served["v2"], 2000, 0.1), served
        counts = fleet.counts
        assert counts[VersionRef("draft", "v2")].served == served["v2"]
        assert counts[VersionRef("draft", "v1")].served == served["v1"]
    finally:
        stop(fleet)


def test_sticky_keys_and_pins() -> None:
    fleet = example_fleet()
    try:
        for key in ("alice", "bob", "carol"):
            landed = {asyncio.run(serve(fleet, "draft", key))[0] for _ in range(10)}
            assert len(landed) == 1  # the same version every time while weights stand
        keys = Counter(fleet.registry.route("draft", f"user-{i}").version for i in range(2000))
        assert within_binomial(keys["v2"], 2000, 0.1), keys
        fleet.registry.set_weights("draft", {"v2": 0})
        assert {asyncio.run(serve(fleet, "draft@v2"))[0].version for _ in range(5)} == {"v2"}
        assert {asyncio.run(serve(fleet, "draft"))[0].version for _ in range(20)} == {"v1"}
    finally:
        stop(fleet)


def test_lru_with_a_budget_of_one_loads_each_alternating_version_again() -> None:
    built: Counter[str] = Counter()
    loaded_at_once: list[int] = []

    def build(version: Version) -> Service:
        built[str(version.settings.weights_path)] += 1
        return Service.from_settings(version.settings)

    fleet = example_fleet(max_loaded=1)
    fleet._build = build  # count the builds: the only way a version comes back after unloading
    v2, final = VersionRef("draft", "v2"), VersionRef("final", "v1")
    try:
        for _ in range(3):
            for pin in ("draft@v2", "final"):
                asyncio.run(serve(fleet, pin))
                loaded_at_once.append(sum(fleet.service(r) is not None for r in (v2, final)))
        assert fleet.counts[v2].loads == 3 and fleet.counts[final].loads == 3
        assert sum(built.values()) == 6
        assert loaded_at_once == [1] * 6  # the budget held after every request
        assert fleet.service(fleet.default_ref) is fleet.default  # the default stays
        assert fleet.counts[fleet.default_ref].loads == 1
        # Requests for the default version never load anything.
        asyncio.run(serve(fleet, "draft@v1"))
        assert sum(built.values()) == 6
    finally:
        stop(fleet)


def test_a_version_that_fails_to_load_fails_only_its_requests_and_is_retried(
    tmp_path: Path,
) -> None:
    registry = tmp_path / "models.toml"
    registry.write_text(
        '[[models]]\nname = "good"\ndefault = true\n'
        '  [[models.versions]]\n  name = "v1"\n  backend = "mock"\n'
        '[[models]]\nname = "broken"\n'
        '  [[models.versions]]\n  name = "v1"\n  backend = "tests.no_such_module:Model"\n'
    )
    fleet = Fleet.from_settings(Settings(models_file=registry))
    fleet.default.start()
    attempts = 0
    real_build = fleet._build

    def build(version: Version) -> Service:
        nonlocal attempts
        attempts += 1
        return real_build(version)

    fleet._build = build
    try:
        for expected_attempts in (1, 2):
            with pytest.raises(NotReady, match=r"version broken@v1 failed to load: .*no_such"):
                asyncio.run(serve(fleet, "broken"))
            assert attempts == expected_attempts  # each request tries again
        assert asyncio.run(serve(fleet, "good"))[0] == VersionRef("good", "v1")
        (broken,) = [m for m in fleet.table() if m["name"] == "broken"]
        assert broken["versions"][0]["state"] == "failed"
        with pytest.raises(UnknownModel, match="this server has 'good', 'broken'"):
            asyncio.run(serve(fleet, "nope"))
    finally:
        stop(fleet)


def test_a_quiet_model_is_served_while_another_is_saturated(tmp_path: Path) -> None:
    """Each version has its own queue and worker, and both share the device "cpu" in turns
    (``engine.arbiter``): a model with a long queue never holds up a quiet one's requests.
    Each quiet request waits up to one busy call (0.15 s), so the busy queue is 9 s deep.
    tests/test_device_share.py bounds the wait by one busy call and checks calls never overlap."""
    registry = tmp_path / "models.toml"
    registry.write_text(
        '[[models]]\nname = "quiet"\ndefault = true\n'
        '  [[models.versions]]\n  name = "v1"\n  backend = "mock"\n'
        '[[models]]\nname = "busy"\n'
        '  [[models.versions]]\n  name = "v1"\n  backend = "tests.fakes:SleepyModel"\n'
        "  max_batch_size = 1\n"
    )
    fleet = Fleet.from_settings(Settings(models_file=registry, result_cache_mb=0))
    fleet.default.start()

    async def race() -> tuple[list[float], int]:
        await serve(fleet, "busy")  # loaded before the clock starts
        busy = [asyncio.ensure_future(serve(fleet, "busy", steps=3)) for _ in range(60)]
        await asyncio.sleep(0.2)  # the busy queue is long now: ~9 s of work
        quiet = []
        for i in range(30):
            start = time.perf_counter()
            await serve(fleet, "quiet", seed=i)
            quiet.append(time.perf_counter() - start)
        waiting = sum(not task.done() for task in busy)
        await asyncio.gather(*busy)
        return quiet, waiting

    try:
        quiet, still_busy = asyncio.run(race())
        assert still_busy > 0  # the quiet requests ran while the busy model was saturated
        p95 = statistics.quantiles(quiet, n=20)[-1]
        assert p95 < 1.0, f"quiet p95 {p95:.3f} s while the busy model has a 9 s queue"
    finally:
        stop(fleet)


def test_without_a_registry_every_name_is_the_one_service() -> None:
    service = Service.from_settings(Settings()).start()
    fleet = Fleet.around(service)
    try:
        for name in (None, "dall-e-3", "anything@at-all"):
            ref, _ = asyncio.run(serve(fleet, name))
            assert ref == fleet.default_ref
        assert fleet.service(ref) is service and fleet.registry.implicit
    finally:
        fleet.stop()
        service.stop()


# -- over HTTP ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    env = {"MODELS_FILE": str(EXAMPLE), "ADMIN_TOKEN": TOKEN, "UI": "false"}
    with inference_server(env) as url:
        yield url


ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def predict(url: str, **fields: Any) -> httpx.Response:
    headers = {"X-Session-Id": fields.pop("session")} if "session" in fields else {}
    return httpx.post(f"{url}/predict", json={**SMALL, **fields}, headers=headers, timeout=60)


def test_predict_names_the_version_in_a_header_and_the_result(server: str) -> None:
    pinned = predict(server, model="draft@v2", seed=5)
    assert pinned.status_code == 200, pinned.text
    assert pinned.headers["X-Model-Version"] == "draft@v2"
    assert pinned.json()["version"] == "draft@v2"
    other = predict(server, model="draft@v1", seed=5)
    # Same request, same seed, other version: other pixels, and never the other's cache entry.
    assert other.json()["images"][0]["data"] != pinned.json()["images"][0]["data"]
    assert predict(server, model="final").headers["X-Model-Version"] == "final@v1"
    assert predict(server).headers["X-Model-Version"].startswith("draft@")  # the default
    image = httpx.post(
        f"{server}/predict",
        json={**SMALL, "model": "draft@v2"},
        headers={"Accept": "image/png"},
        timeout=60,
    )
    assert image.headers["X-Model-Version"] == "draft@v2"


def test_sticky_sessions_over_http(server: str) -> None:
    for session in ("s-1", "s-2", "s-3", "s-4"):
        landed = {predict(server, model="draft", session=session).headers["X-Model-Version"]}
        landed |= {
            predict(server, model="draft", session=session).headers["X-Model-Version"]
            for _ in range(4)
        }
        assert len(landed) == 1, landed


def test_a_batch_mixes_models_and_fails_only_the_unknown_item(server: str) -> None:
    body = {
        "requests": [
            {**SMALL, "model": "final"},
            {**SMALL, "model": "draft@v2"},
            {**SMALL, "model": "nope"},
            SMALL,
        ]
    }
    answer = httpx.post(f"{server}/predict/batch", json=body, timeout=60).json()["results"]
    assert answer[0]["result"]["version"] == "final@v1"
    assert answer[1]["result"]["version"] == "draft@v2"
    assert answer[2]["error"]["type"] == "unknown_model"
    assert "'draft', 'final'" in answer[2]["error"]["message"]
    assert answer[3]["result"]["version"].startswith("draft@")


def test_unknown_model_is_a_4xx_in_each_protocols_shape(server: str) -> None:
    native = predict(server, model="nope")
    assert native.status_code == 404
    assert native.json()["error"]["type"] == "unknown_model"
    assert native.json()["error"]["available"] == ["draft", "final"]
    version = predict(server, model="draft@v9")
    assert version.status_code == 404 and "'v1', 'v2'" in version.json()["error"]["message"]

    openai = httpx.post(
        f"{server}/v1/images/generations", json={"prompt": "x", "model": "nope"}, timeout=60
    )
    assert openai.status_code == 404
    assert openai.json()["error"]["code"] == "model_not_found"
    assert openai.json()["error"]["param"] == "model"
    assert "'draft', 'final'" in openai.json()["error"]["message"]

    replicate = httpx.post(
        f"{server}/v1/models/me/nope/predictions", json={"input": {"prompt": "x"}}, timeout=60
    )
    assert replicate.status_code == 404
    assert replicate.headers["content-type"] == "application/problem+json"
    assert replicate.json()["available"] == ["draft", "final"]
    ambiguous = httpx.post(
        f"{server}/v1/predictions", json={"version": "v1", "input": {"prompt": "x"}}, timeout=60
    )
    assert ambiguous.status_code == 404
    assert "several models have version 'v1'" in ambiguous.json()["detail"]


def test_the_openai_client_selects_and_lists_models(server: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    ids = [model.id for model in client.models.list()]
    assert ids == ["draft", "final", "draft@v1", "draft@v2", "final@v1"]
    raw = client.images.with_raw_response.generate(
        prompt="a red fox", model="draft@v2", size="64x64", extra_body={"steps": 2, "seed": 1}
    )
    assert raw.headers["X-Model-Version"] == "draft@v2"
    assert raw.parse().data[0].b64_json
    final = client.images.with_raw_response.generate(
        prompt="a red fox", model="final", size="64x64", user="u-1", extra_body={"steps": 2}
    )
    assert final.headers["X-Model-Version"] == "final@v1"


def test_the_replicate_client_selects_by_owner_name_and_pins_by_version(server: str) -> None:
    import replicate

    client = replicate.Client(api_token="unused", base_url=server)
    by_name = client.models.predictions.create(model="me/final", input=SMALL, wait=True)
    assert by_name.version == "final@v1" and by_name.status == "succeeded"
    pinned = client.run("me/draft:v2", input=SMALL)  # v2: a version only draft has
    assert len(pinned) == 1
    (latest,) = [p for p in client.predictions.list().results if p.version == "draft@v2"][:1]
    assert latest.status == "succeeded"
    explicit = client.predictions.create(version="draft@v1", input=SMALL, wait=True)
    assert explicit.version == "draft@v1"
    model = client.models.get("me/draft")
    assert model.latest_version is not None and model.latest_version.id == "draft@v1"
    assert [v.id for v in model.versions.list()] == ["draft@v1", "draft@v2"]
    with pytest.raises(replicate.exceptions.ReplicateError, match="'draft', 'final'"):
        client.models.get("me/nope")


def test_admin_routes_need_the_token_and_reweight_atomically_under_a_burst(server: str) -> None:
    assert httpx.get(f"{server}/admin/models").status_code == 401
    wrong = httpx.put(
        f"{server}/admin/models/draft/weights",
        json={"v2": 100},
        headers={"Authorization": "Bearer wrong"},
    )
    assert wrong.status_code == 401
    bad = httpx.put(f"{server}/admin/models/draft/weights", json={"v1": -1}, headers=ADMIN)
    assert bad.status_code == 422 and "finite number >= 0" in bad.text

    failures: list[str] = []
    versions: Counter[str] = Counter()
    flips = 0
    done = threading.Event()

    def reweight() -> None:
        nonlocal flips
        tables = ({"v1": 0, "v2": 1}, {"v1": 1, "v2": 0}, {"v1": 50, "v2": 50})
        while not done.is_set():
            answer = httpx.put(
                f"{server}/admin/models/draft/weights", json=tables[flips % 3], headers=ADMIN
            )
            if answer.status_code != 200:
                failures.append(f"admin {answer.status_code}: {answer.text}")
            flips += 1

    async def burst() -> None:
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=server, timeout=120, limits=limits) as client:

            async def one(i: int) -> None:
                answer = await client.post("/predict", json={**SMALL, "model": "draft", "seed": i})
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code}: {answer.text[:200]}")
                else:
                    versions[answer.headers["X-Model-Version"]] += 1

            await asyncio.gather(*(one(i) for i in range(300)))

    mover = threading.Thread(target=reweight)
    mover.start()
    try:
        asyncio.run(burst())
    finally:
        done.set()
        mover.join()
    assert failures == []
    assert sum(versions.values()) == 300 and flips >= 2
    assert set(versions) == {"draft@v1", "draft@v2"}  # both served while weights moved

    table = httpx.put(
        f"{server}/admin/models/draft/weights", json={"v1": 0, "v2": 1}, headers=ADMIN
    )
    assert table.json() == {"model": "draft", "weights": {"v1": 0.0, "v2": 1.0}}
    assert {predict(server, model="draft").headers["X-Model-Version"] for _ in range(10)} == {
        "draft@v2"
    }
    models = httpx.get(f"{server}/admin/models", headers=ADMIN).json()["models"]
    draft = {v["name"]: v for v in models[0]["versions"]}
    assert draft["v2"]["weight"] == 1.0 and draft["v2"]["loaded"] and draft["v2"]["served"] > 0
    assert {"queue_depth", "state", "loads"} <= set(draft["v1"])
    assert httpx.get(server).json()["models"] == models
    httpx.put(f"{server}/admin/models/draft/weights", json={"v1": 90, "v2": 10}, headers=ADMIN)


def test_metrics_count_requests_by_model_and_version(server: str) -> None:
    predict(server, model="final")
    text = httpx.get(f"{server}/metrics").text
    assert 'inference_version_requests_total{model="final",outcome="ok",version="v1"}' in text
    assert 'inference_version_loaded{model="draft",version="v1"} 1.0' in text
    assert 'inference_version_request_duration_seconds_count{model="final",version="v1"}' in text


def test_admin_routes_are_off_without_a_token() -> None:
    from fastapi.testclient import TestClient

    from inference.http.app import create_app

    with TestClient(create_app(Settings(ui=False))) as client:
        assert client.get("/admin/models").status_code == 404
        assert client.put("/admin/models/default/weights", json={}).status_code == 404
    secret = Settings(ui=False, auth_token="client-token")
    with TestClient(create_app(secret)) as client:  # AUTH_TOKEN serves when ADMIN_TOKEN is unset
        headers = {"Authorization": "Bearer client-token"}
        assert client.get("/admin/models", headers=headers).status_code == 200


def test_a_bad_registry_stops_serve_with_one_line_per_problem(tmp_path: Path) -> None:
    registry = tmp_path / "models.toml"
    registry.write_text(
        '[[models]]\nname = "a"\n  [[models.versions]]\n  name = "v1"\n'
        '  backend = "mokc"\n  weight = -1\n'
    )
    env = {**os.environ, "MODELS_FILE": str(registry), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "inference", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in done.stderr
    assert "backend 'mokc'" in lines[0] and "(did you mean 'mock'?)" in lines[0]
    assert "weight of 'v1' must be a finite number >= 0, got -1" in lines[1]
