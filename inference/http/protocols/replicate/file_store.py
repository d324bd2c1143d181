"""Files uploaded with Replicate's ``POST /v1/files``, held in memory until a prediction uses
them.

The official client uploads every file input (an open file, a ``Path``) before it creates the
prediction and puts the file's URL in the input; the prediction reads the bytes from here when
it is created (``resolve``), never over the network. So a file only has to live from its
upload to its prediction: at most FILES_MAX_COUNT files and FILES_MAX_BYTES bytes are kept, the
oldest dropped first to make room, and each is forgotten FILES_TTL_S after its upload (its
``expires_at``). Nothing is written to disk: a restart forgets every file, as it forgets the
in-process predictions.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import Request
from starlette.exceptions import HTTPException

from inference.errors import InvalidRequest
from inference.schema import IMAGE_FIELDS
from inference.settings import Settings


@dataclass(frozen=True)
class StoredFile:
    """One upload and what Replicate's file object says of it. The checksums are computed once
    at upload, off the event loop: hashing a full store on every list would stall it."""

    id: str
    name: str
    content_type: str
    data: bytes
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0  # wall clock, for the object's timestamps
    expires_at: float = 0.0  # wall clock
    expires: float = 0.0  # on the store's clock: what the store goes by
    md5: str = ""  # hex; also the etag, as S3 (Replicate's storage) writes it
    sha256: str = ""  # hex


class FileStore:
    """Files by id, bounded by count, bytes and age; safe from any thread."""

    def __init__(
        self,
        max_count: int,
        max_bytes: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_count, self.max_bytes, self.ttl_s, self.clock = max_count, max_bytes, ttl_s, clock
        self.bytes = 0
        self._files: OrderedDict[str, StoredFile] = OrderedDict()  # oldest first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._files)

    def put(self, file: StoredFile) -> StoredFile:
        """Keep ``file`` (its ``expires`` set from the TTL), dropping the oldest to make room;
        a 413 for a file no room could hold, before anything is dropped."""
        if len(file.data) > self.max_bytes:
            raise HTTPException(
                413,
                f"the file is {len(file.data)} bytes, more than this server keeps of all uploads "
                f"together ({self.max_bytes}, FILES_MAX_BYTES); send a smaller file",
            )
        with self._lock:
            now = self.clock()
            self._drop(now, len(file.data))
            kept = replace(file, expires=now + self.ttl_s, expires_at=file.created_at + self.ttl_s)
            self._files[kept.id] = kept
            self.bytes += len(kept.data)
        return kept

    def get(self, file_id: str) -> StoredFile | None:
        """The file, or None when it is unknown, deleted, dropped or expired."""
        with self._lock:
            self._drop(self.clock(), 0)
            return self._files.get(file_id)

    def delete(self, file_id: str) -> bool:
        with self._lock:
            file = self._files.pop(file_id, None)
            if file is not None:
                self.bytes -= len(file.data)
            return file is not None

    def newest_first(self) -> list[StoredFile]:
        with self._lock:
            self._drop(self.clock(), 0)
            return list(reversed(self._files.values()))

    def _drop(self, now: float, needed: int) -> None:
        """Drop expired files, then the oldest until one more file of ``needed`` bytes fits.
        Every file lives equally long, so the oldest is always the first to expire."""
        while self._files:
            file_id, oldest = next(iter(self._files.items()))
            room = len(self._files) + (needed > 0) <= self.max_count
            if oldest.expires > now and room and self.bytes + needed <= self.max_bytes:
                return
            del self._files[file_id]
            self.bytes -= len(oldest.data)


def get_file_store(request: Request) -> FileStore:
    """The app's store, made on first use from its settings (only uploads need one)."""
    state = request.app.state
    store = getattr(state, "file_store", None)
    if store is None:
        settings: Settings = state.settings
        store = state.file_store = FileStore(
            settings.files_max_count, settings.files_max_bytes, settings.files_ttl_s
        )
    return store


def files_url(base: str) -> str:
    """Where this server's files are: ``{base}/v1/files/``, then an id."""
    return f"{base}/v1/files/"


def resolve(given: dict[str, Any], base: str, store: FileStore) -> dict[str, Any]:
    """The input with each image field that is one of this server's file URLs (``urls.get``,
    or its ``/download``) replaced by the file's bytes; other values as they are."""
    prefix = files_url(base)
    resolved = dict(given)
    for name in IMAGE_FIELDS:
        value = given.get(name)
        if not isinstance(value, str) or not value.startswith(prefix):
            continue
        file_id = value[len(prefix) :].removesuffix("/download")
        file = store.get(file_id)
        if file is None:
            raise InvalidRequest(
                f"input.{name}",
                f"input.{name}: file {file_id[:100]!r} is not on this server (deleted, or "
                f"dropped after FILES_TTL_S or to make room); upload it again",
            )
        resolved[name] = file.data
    return resolved
