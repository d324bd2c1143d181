"""Traffic weights shared by a fleet of processes (Modal's containers) through a key-value store.

Every container of a Modal deployment routes by the weights one admin call set, so they live
in a ``modal.Dict`` (deploy.py binds one), one key per model: Modal applies each ``put``
atomically, so a model's weights are replaced as a unit and a reader sees the old table or the
new one. This module never imports modal: the store is anything with ``get(key, default)`` and
``put(key, value)``, which ``modal.Dict``'s blocking interface is and a test's dict fake is.

Routing never waits on the store. ``WeightsRefresher`` re-reads it every ``interval_s`` on its
own thread and the registry swaps the new table in (``Registry.refresh``), so a request pays a
memory read, not a network round trip, and a re-weight reaches every container within
``interval_s`` (MODAL_WEIGHTS_REFRESH_S). Reading per request instead would add a Dict call to
every request and make the store's availability every request's; a stale second of a canary's
share is the cheaper fault.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, Protocol

log = logging.getLogger(__name__)


class KeyValueStore(Protocol):
    """What ``DictWeights`` needs of a store: ``modal.Dict``'s blocking get and put."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def put(self, key: str, value: Any) -> Any: ...


class DictWeights:
    """A ``WeightsBackend`` over a shared store: what one container puts, every container
    gets. Values are stored as plain dicts (version -> float), readable by any release."""

    def __init__(self, store: KeyValueStore) -> None:
        self.store = store

    def get(self, model: str) -> Mapping[str, float] | None:
        stored = self.store.get(model, None)
        return dict(stored) if isinstance(stored, Mapping) else None

    def put(self, model: str, weights: Mapping[str, float]) -> None:
        self.store.put(model, {name: float(weight) for name, weight in weights.items()})


class Refreshable(Protocol):
    def refresh(self) -> bool: ...


class WeightsRefresher:
    """Calls ``registry.refresh()`` every ``interval_s`` on a daemon thread until ``stop``; a
    store that fails is logged and tried again next time (the last weights stay in force)."""

    def __init__(self, registry: Refreshable, interval_s: float) -> None:
        self.registry = registry
        self.interval_s = interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="weights-refresh", daemon=True)

    def start(self) -> WeightsRefresher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval_s + 5)

    def _run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            try:
                if self.registry.refresh():
                    log.info("traffic weights changed by another container: adopted")
            except Exception:  # the store is down: keep routing by the weights we have
                log.warning("reading the shared traffic weights failed", exc_info=True)
