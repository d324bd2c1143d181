"""What a backend needs for adapters: resolution under the deployment's rules and the LRU.

A backend owns one ``Adapters``: its ``check`` hook calls ``check`` (refuse at submission what
can be known then), its ``generate`` calls ``load`` for the batch's adapters (all jobs of a
batch share them: they are part of ``batch_key``) with its own ``read(ref, path)`` function,
which turns a verified file into whatever the backend keeps loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from inference.lora.loaded import AdapterCache
from inference.lora.sources import AdapterSources
from inference.lora_spec import LoraAdapter
from inference.settings import Settings


class Adapters:
    """One backend's adapter sources and loaded-adapter cache."""

    def __init__(
        self, settings: Settings, on_evict: Callable[[str, Any], None] | None = None
    ) -> None:
        self.sources = AdapterSources(settings)
        self.cache = AdapterCache(
            settings.lora_cache_max_count, settings.lora_cache_max_bytes, on_evict
        )

    def check(
        self,
        loras: Sequence[LoraAdapter],
        inspect: Callable[[str, Path], None] | None = None,
    ) -> None:
        """Refuse, naming the adapter, what is wrong; loaded ones pass, others are fetched now
        and handed to ``inspect(ref, path)``, the backend's own look at the file (which a
        loaded adapter has passed already: no second fetch, no Hub round trip per request).

        This runs while the request is validated (off the event loop, in the service's blocking
        pool), so a slow adapter host holds up only its own request: the engine's one worker,
        which every request shares, later finds the file on disk (``load``).
        """
        loaded = {entry["ref"] for entry in self.cache.loaded()}
        for adapter in loras:
            if adapter.ref not in loaded:
                path = self.sources.fetch(adapter.ref)
                if inspect is not None:
                    inspect(adapter.ref, path)

    def load(
        self, loras: Sequence[LoraAdapter], read: Callable[[str, Path], Any]
    ) -> list[tuple[Any, float]]:
        """Each adapter's loaded value (from the cache, else fetched and ``read``) and scale."""
        keep = frozenset(adapter.ref for adapter in loras)
        loaded = []
        for adapter in loras:

            def load_one(ref: str = adapter.ref) -> tuple[Any, int]:
                path = self.sources.fetch(ref)
                return read(ref, path), path.stat().st_size

            loaded.append((self.cache.get(adapter.ref, load_one, keep), adapter.scale))
        return loaded

    def info(self) -> list[dict[str, Any]]:
        return self.cache.loaded()
