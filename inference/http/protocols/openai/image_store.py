"""Images behind unguessable, expiring URLs: what OpenAI's ``response_format=url`` returns.

OpenAI answers ``url`` with a signed link that works for an hour without the API key; clients
fetch it with a plain GET. This store does the same in memory: each image gets a random
256-bit token (the URL is the credential, so it is served without the bearer token), and is
dropped when its time is up (IMAGE_LINK_TTL_S) or when newer images need the room
(IMAGE_LINK_STORE_MB, oldest first). One response's images go in together or not at all: a
response larger than the store is refused rather than answered with links that are already
dead. Nothing is written to disk, so a restart forgets every URL; a client that needs the
image for longer downloads it.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fastapi import Request

from inference.settings import Settings


@dataclass(frozen=True)
class StoredImage:
    data: bytes
    media_type: str
    expires: float  # on the store's clock

    def seconds_left(self, now: float) -> int:
        return max(0, int(self.expires - now))


class OverBudget(ValueError):
    """A response's images are larger than the whole store (IMAGE_LINK_STORE_MB)."""

    def __init__(self, needed: int, max_bytes: int) -> None:
        super().__init__(f"{needed} bytes of images do not fit a store of {max_bytes} bytes")
        self.needed, self.max_bytes = needed, max_bytes


class ImageStore:
    """A bytes-bounded, time-bounded map from random tokens to images; safe from any thread."""

    def __init__(
        self, max_bytes: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.clock = clock
        self.bytes = 0
        self._images: OrderedDict[str, StoredImage] = OrderedDict()  # oldest first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._images)

    def put_all(self, images: Sequence[tuple[bytes, str]]) -> list[str]:
        """Store one response's images (bytes, media type) together; returns their tokens.

        All of them or none: older images make room, never images of the same response, so
        no link is dead on arrival. Raises ``OverBudget`` when they do not fit the whole store.
        """
        needed = sum(len(data) for data, _ in images)
        if needed > self.max_bytes:
            raise OverBudget(needed, self.max_bytes)
        tokens = [secrets.token_urlsafe(32) for _ in images]
        with self._lock:
            now = self.clock()
            self._make_room(needed, now)
            for token, (data, media_type) in zip(tokens, images, strict=True):
                self._images[token] = StoredImage(data, media_type, now + self.ttl_s)
            self.bytes += needed
        return tokens

    def get(self, token: str) -> StoredImage | None:
        """The image, or None when the token is unknown or has expired."""
        with self._lock:
            image = self._images.get(token)
            if image is None or image.expires <= self.clock():
                return None
            return image

    def _make_room(self, needed: int, now: float) -> None:
        """Drop expired images, then the oldest ones until ``needed`` more bytes fit.

        Every image lives equally long, so the oldest is always the first to expire.
        """
        while self._images:
            token, oldest = next(iter(self._images.items()))
            if oldest.expires > now and self.bytes + needed <= self.max_bytes:
                return
            del self._images[token]
            self.bytes -= len(oldest.data)


def get_image_store(request: Request) -> ImageStore:
    """The app's store, made on first use from its settings (only URL requests need one)."""
    state = request.app.state
    store = getattr(state, "image_store", None)
    if store is None:
        settings: Settings = state.settings
        max_bytes = int(settings.image_link_store_mb * 2**20)
        store = state.image_store = ImageStore(max_bytes, settings.image_link_ttl_s)
    return store
