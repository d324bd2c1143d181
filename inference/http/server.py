"""Serving the app with uvicorn, with a shutdown that loses no work and prints no traceback.

On SIGTERM (or the first Ctrl-C) the service drains before uvicorn stops listening: /ready turns
503 at once so a load balancer stops sending, new predictions get a JSON 503 with Retry-After,
requests already queued or running get ``SHUTDOWN_GRACE_S`` to finish, and whatever is left then
fails as a JSON 503. Only then does uvicorn close its sockets; connections still open after that
(a browser tab's Gradio heartbeat stream) are cut after one second instead of holding the
process for uvicorn's whole graceful window. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from types import FrameType

import uvicorn
from fastapi import FastAPI

from inference.http.app import create_app
from inference.service import Service
from inference.settings import Settings

log = logging.getLogger(__name__)

#: How long uvicorn waits for connections after the service has drained: only streams are left.
STREAMS_GRACE_S = 1


class DrainingServer(uvicorn.Server):
    """A uvicorn server that drains ``service`` when asked to exit."""

    def __init__(
        self, config: uvicorn.Config, app: FastAPI, service: Service, grace_s: float
    ) -> None:
        super().__init__(config)
        self.app = app
        self.service = service
        self.grace_s = grace_s
        self._draining = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining:  # a second signal: stop now
            self.force_exit = True
            super().handle_exit(sig, frame)
            return
        self._draining = True
        log.info("shutting down: draining for up to %gs (SHUTDOWN_GRACE_S)", self.grace_s)
        threading.Thread(
            target=self._drain_then_exit, args=(sig, frame), name="drain", daemon=True
        ).start()

    def _drain_then_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.service.drain(self.grace_s):
            log.warning("requests still running after %gs fail with 503", self.grace_s)
        self.service.stop()
        if self._loop is not None:
            for close in self.app.state.stream_closers:
                self._loop.call_soon_threadsafe(close)
        super().handle_exit(sig, frame)


def serve(settings: Settings) -> None:
    """Serve the default app on ``settings.host:settings.port`` until a signal drains it."""
    service = Service.from_settings(settings)
    app = create_app(settings, service)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        limit_concurrency=settings.max_connections,
        timeout_graceful_shutdown=STREAMS_GRACE_S,
        # uvicorn believes X-Forwarded-For from 127.0.0.1 by default: any local process or
        # co-located proxy could then choose its client address. Only TRUSTED_PROXIES may.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.trusted_proxies or None,
    )
    DrainingServer(config, app, service, settings.shutdown_grace_s).run()
