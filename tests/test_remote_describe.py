"""A router's stand-ins ask their pool for its description once per load, failed or not
(``models.remote``): each of a version's stand-ins (up to MAX_REMOTE_CALLS) loads on its own
worker, and a pool that fails to start must not be asked, and waited for, once per stand-in."""

from __future__ import annotations

import threading
import time

import pytest

from inference.models.mock import MockModel
from inference.models.remote import Description, RemoteVersion, stand_ins
from inference.service import Service
from inference.settings import Settings

STAND_INS = 4


class DownPool:
    """A pool whose containers fail to start: ``describe`` takes a while, then raises."""

    def __init__(self) -> None:
        self.asked = 0
        self._lock = threading.Lock()

    def describe(self) -> Description:
        with self._lock:
            self.asked += 1
        time.sleep(1.0)  # every stand-in's worker has asked by now
        raise ConnectionError("the pool's containers failed to start")

    def generate(self, jobs: list) -> list:  # type: ignore[type-arg]
        raise AssertionError("never called: nothing loaded")


def test_a_pool_that_fails_to_describe_is_asked_once_for_all_its_stand_ins() -> None:
    pool = DownPool()
    device = "modal:test@v1"
    version = RemoteVersion(pool, device)
    first, *others = stand_ins(version, MockModel(), STAND_INS)
    # As deploy.remote_builder does: a copy, since DEVICES validation knows no pool names.
    settings = Settings().model_copy(update={"devices": ",".join([device] * STAND_INS)})
    service = Service(first, settings, replicas=others)
    with pytest.raises(ConnectionError, match="failed to start"):
        service.start()
    for worker in service.engine._workers:
        worker.join(timeout=30)
    assert pool.asked == 1
    with pytest.raises(ConnectionError):  # the next load asks again
        version.description()
    assert pool.asked == 2
