"""Pure ASGI middleware (no BaseHTTPMiddleware, so streaming and disconnects pass through)."""

from __future__ import annotations

import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference.http.errors import error_bytes
from inference.http.metrics import Metrics


class BodySizeLimit:
    """Refuse request bodies over the limit with 413, by header or while streaming.

    Bodies posted or put to paths ``image_paths`` matches may carry images, so they get
    ``image_max_bytes`` (MAX_BODY_BYTES plus room for two images of MAX_IMAGE_BYTES); every
    other body gets ``max_bytes``. The route is not known before routing, so the rule goes by
    path.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        image_max_bytes: int | None = None,
        image_paths: re.Pattern[str] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.image_max_bytes = image_max_bytes or max_bytes
        self.image_paths = image_paths

    def _limit(self, scope: Scope) -> tuple[int, str]:
        carries = self.image_paths is not None and self.image_paths.match(scope["path"])
        if carries and scope["method"] in ("POST", "PUT"):
            return self.image_max_bytes, "MAX_BODY_BYTES plus two images of MAX_IMAGE_BYTES"
        return self.max_bytes, "MAX_BODY_BYTES"

    async def _reject(self, send: Send, limit: int, setting: str) -> None:
        message = (
            f"request body is larger than {limit} bytes ({setting}); "
            "send fewer or smaller requests (or smaller images)"
        )
        body = error_bytes("payload_too_large", message)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self._limit(scope)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(send, limit, setting)
            return
        seen = 0
        rejected = False

        async def limited_receive() -> Message:
            # Past the limit, answer 413 ourselves and tell the app the client has gone:
            # an exception here would be turned into a 400 by FastAPI's body parsing.
            nonlocal seen, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    rejected = True
                    await self._reject(send, limit, setting)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not rejected:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)


#: Label values come from closed sets only: a client must not be able to grow /metrics.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class MetricsMiddleware:
    """Count requests by route template (not raw path) and known method, to bound label
    cardinality; anything else is counted as ``other``."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route: Any = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            self.metrics.requests.labels(label, method, str(status)).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - started)
