"""The loaded-adapter LRU: bounded in count and bytes, with the counters metrics export.

A backend keeps its loaded adapters here (the mock its deltas, diffusers the name of a peft
adapter inside the pipeline). Loading an adapter costs a file read and, on a GPU, a copy; a
switch between cached ones costs almost nothing; so hot adapters stay, and the least recently
used one is unloaded (``on_evict``) when LORA_CACHE_MAX_COUNT or LORA_CACHE_MAX_BYTES would be
passed. Only the engine's worker thread mutates it; readers (GET /, /metrics) take a snapshot.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0


@dataclass(frozen=True)
class Entry:
    value: Any
    nbytes: int


class AdapterCache:
    """LRU of loaded adapters keyed by reference."""

    def __init__(
        self, max_count: int, max_bytes: int, on_evict: Callable[[str, Any], None] | None = None
    ) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.on_evict = on_evict
        self.stats = CacheStats()
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._lock = threading.Lock()

    def get(
        self, ref: str, load: Callable[[], tuple[Any, int]], keep: frozenset[str] = frozenset()
    ) -> Any:
        """The loaded adapter for ``ref``, loading it (``load() -> (value, nbytes)``) on a miss.

        A failing ``load`` leaves the cache as it was. ``keep`` (the other adapters of the same
        request) is never evicted to make room: a request's own adapters must all stay loaded.
        """
        with self._lock:
            entry = self._entries.get(ref)
            if entry is not None:
                self._entries.move_to_end(ref)
                self.stats.hits += 1
                return entry.value
            self.stats.misses += 1
        value, nbytes = load()
        with self._lock:
            self._entries[ref] = Entry(value, nbytes)
            self._shrink(keep | {ref})
        return value

    def _shrink(self, keep: frozenset[str]) -> None:
        while len(self._entries) > self.max_count or self.nbytes > self.max_bytes:
            ref = next((r for r in self._entries if r not in keep), None)
            if ref is None:
                break
            entry = self._entries.pop(ref)
            self.stats.evictions += 1
            log.info("unloaded adapter %r (least recently used)", ref)
            if self.on_evict is not None:
                self.on_evict(ref, entry.value)

    @property
    def nbytes(self) -> int:
        return sum(entry.nbytes for entry in self._entries.values())

    def loaded(self) -> list[dict[str, Any]]:
        """The adapters loaded now, most recently used last (for GET /)."""
        with self._lock:
            return [{"ref": ref, "bytes": e.nbytes} for ref, e in self._entries.items()]
