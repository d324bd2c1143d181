"""Shared fixtures: isolated settings, a started mock engine, a real server subprocess."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inference.models.mock import MockModel
from inference.service import Service
from inference.settings import Settings, env_names, get_settings
from tests.servers import inference_server

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs offline: connections beyond loopback fail at once, loudly."""
    connect = socket.socket.connect

    def loopback_only(self: socket.socket, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if self.family != socket.AF_UNIX and host not in LOOPBACK:
            raise OSError(f"network blocked in tests: {address}")
        connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test reads settings afresh, unaffected by the developer's own env vars."""
    for name in env_names():
        monkeypatch.delenv(name, raising=False)
    # Gradio costs seconds per app; only the UI and Space tests turn it on (explicitly).
    monkeypatch.setenv("UI", "false")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def make_service(**settings: object) -> Service:
    return Service(MockModel(), Settings(**settings)).start()


@pytest.fixture
def service() -> Iterator[Service]:
    svc = make_service()
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """One real uvicorn server with the mock model for the whole session."""
    with inference_server() as url:
        yield url


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Stable Diffusion pipeline (64x64, safetensors), built once per session."""
    pytest.importorskip("diffusers")
    from tools.tiny import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd"))
