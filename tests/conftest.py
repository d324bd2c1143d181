"""Shared fixtures: isolated settings, a started mock engine, a real server subprocess."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from inference.engine import Engine
from inference.models.mock import MockModel
from inference.settings import Settings, get_settings
from tests.servers import inference_server


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test reads settings afresh, unaffected by the developer's own env vars."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def make_engine(**settings: object) -> Engine:
    return Engine(MockModel(), Settings(**settings)).start()


@pytest.fixture
def engine() -> Iterator[Engine]:
    eng = make_engine()
    yield eng
    eng.stop()


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """One real uvicorn server with the mock model for the whole session."""
    with inference_server() as url:
        yield url
