"""Choosing among several models at the OpenAI and Replicate front doors (issue 23), against a
real server on a registry of three models and a budget of one loaded version:

- ``GET /v1/models`` is one path that OpenAI's client (``client.models.list()``: ``object``,
  ``data``) and Replicate's (``replicate.models.list()``: ``results``, ``next``) both read.
- An OpenAI stream holds its version until the stream ends: a request for another version
  while the stream runs does not unload the streaming one (the fleet's lease, which the route
  hands to the stream because the route returns before the stream does).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from inference.models.base import ProgressCallback
from inference.models.mock import MockModel
from inference.schema import Job
from inference.settings import Settings
from tests.servers import ROOT, inference_server

GATE_ENV = "TEST_GATE_FILE"
REGISTRY = """
[[models]]
name = "quick"
default = true
  [[models.versions]]
  name = "v1"
  backend = "mock"

[[models]]
name = "slow"
description = "Waits for a file before drawing."
  [[models.versions]]
  name = "v1"
  backend = "tests.test_fleet_front_doors:GateFileModel"

[[models]]
name = "other"
  [[models.versions]]
  name = "v1"
  backend = "mock"
  [[models.versions]]
  name = "v2"
  backend = "mock"
  weight = 0
"""


class GateFileModel(MockModel):
    """The mock's pixels, drawn only once the file named by TEST_GATE_FILE exists (at most
    60 s later): a request in flight for exactly as long as the test wants."""

    def __init__(self, weights_path: Path | None = None, settings: Settings | None = None) -> None:
        super().__init__()
        self.gate = Path(os.environ[GATE_ENV])
        # A device of its own: on the shared "cpu" the other version would wait its turn
        # behind the gated call (versions take turns on a device: test_device_share.py).
        self.device = "gated"

    def generate(
        self, jobs: Sequence[Job], progress: ProgressCallback | None = None
    ) -> list[list[np.ndarray]]:
        deadline = time.monotonic() + 60
        while not self.gate.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return super().generate(jobs, progress)


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gate") / "open"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, gate: Path) -> Iterator[str]:
    registry = tmp_path_factory.mktemp("registry") / "models.toml"
    registry.write_text(REGISTRY, encoding="utf-8")
    env = {
        "MODELS_FILE": str(registry),
        "MAX_LOADED_MODELS": "1",
        "UI": "false",
        GATE_ENV: str(gate),
        "PYTHONPATH": str(ROOT),
    }
    with inference_server(env) as url:
        yield url


def _versions(server: str) -> dict[str, dict[str, Any]]:
    """Each version's row of GET / (state, loads, served), by name@version."""
    models = httpx.get(f"{server}/", timeout=30).json()["models"]
    return {f"{m['name']}@{v['name']}": v for m in models for v in m["versions"]}


def test_a_stream_keeps_its_version_loaded_until_it_ends(server: str, gate: Path) -> None:
    body = {"model": "slow", "prompt": "a fox", "stream": True, "size": "256x256", "seed": 1}
    with (
        httpx.Client(base_url=server, timeout=90) as client,
        client.stream("POST", "/v1/images/generations", json=body) as stream,
    ):
        # Headers are here: the route has returned, the stream is running, its model waits.
        assert stream.status_code == 200
        assert stream.headers["X-Model-Version"] == "slow@v1"
        # Another version loads over the budget of one (slow@v1 is busy) and is served...
        other = client.post("/predict", json={"prompt": "a cat", "model": "other@v1"})
        assert other.status_code == 200, other.text
        # ...and once it is idle the budget is restored by unloading it, not the busy stream's.
        versions = _versions(server)
        assert versions["slow@v1"]["state"] == "loaded"
        assert versions["other@v1"]["state"] == "unloaded"
        gate.touch()
        events = stream.read().decode()
    assert "event: image_generation.completed" in events
    assert "event: error" not in events
    versions = _versions(server)
    assert versions["slow@v1"]["loads"] == 1
    assert versions["slow@v1"]["served"] == 1 and versions["slow@v1"]["failed"] == 0


def test_a_stream_lets_its_version_go_when_it_ends(server: str, gate: Path) -> None:
    gate.touch()
    body = {"model": "slow", "prompt": "a hen", "stream": True, "size": "256x256"}
    with httpx.Client(base_url=server, timeout=90) as client:
        assert "image_generation.completed" in client.post("/v1/images/generations", json=body).text
        # The stream ended, so slow@v1 is idle: loading another version unloads it.
        assert client.post("/predict", json={"prompt": "a cat", "model": "other@v2"}).is_success

    def unloaded() -> bool:
        return _versions(server)["slow@v1"]["state"] == "unloaded"

    deadline = time.monotonic() + 30
    while not unloaded() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert unloaded()


def test_openai_client_lists_the_models_and_their_pins(server: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key="unused")
    ids = [model.id for model in client.models.list()]
    assert ids == ["quick", "slow", "other", "quick@v1", "slow@v1", "other@v1", "other@v2"]


def test_replicate_client_lists_the_same_models(server: str) -> None:
    import replicate

    client = replicate.Client(api_token="unused", base_url=server)
    page = client.models.list()
    assert [model.id for model in page] == ["local/quick", "local/slow", "local/other"]
    assert page.next is None and page.previous is None
    slow = page.results[1]
    assert slow.description == "Waits for a file before drawing."
    assert slow.latest_version is not None and slow.latest_version.id == "slow@v1"
    # other's latest version is the one its traffic reaches (v2 has weight 0).
    assert page.results[2].latest_version.id == "other@v1"
    # What the list names, the client can run: the listed model's own route answers.
    assert client.models.get("local/other").latest_version.id == "other@v1"


def test_models_list_without_a_registry_names_the_served_model(server_url: str) -> None:
    body = httpx.get(f"{server_url}/v1/models", timeout=30).json()
    assert [model["id"] for model in body["data"]] == ["mock"]
    assert [model["name"] for model in body["results"]] == ["mock"]
