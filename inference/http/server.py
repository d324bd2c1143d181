"""Serving the app with uvicorn, with a shutdown that loses no work and prints no traceback.

On SIGTERM (or the first Ctrl-C) the service drains before uvicorn stops listening: /ready turns
503 at once so a load balancer stops sending, new predictions get a JSON 503 with Retry-After,
requests already queued or running get ``SHUTDOWN_GRACE_S`` to finish, and whatever is left then
fails as a JSON 503. Only then does uvicorn close its sockets; connections still open after that
(a browser tab's Gradio heartbeat stream) are cut after one second instead of holding the
process for uvicorn's whole graceful window. A second signal exits at once.

The port is bound before the model starts loading, so a port already in use is one line that
suggests ``--port`` rather than a load, a "ready" line and then uvicorn's ``Errno 98``; once the
model is ready, the log says where to go: the API, its docs and the UI, at the bound address.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading
from types import FrameType

import uvicorn
from fastapi import FastAPI

from inference.errors import InferenceError
from inference.fleet import Fleet
from inference.http.app import create_app
from inference.service import Service
from inference.settings import Settings

log = logging.getLogger(__name__)

#: How long uvicorn waits for connections after the service has drained: only streams are left.
STREAMS_GRACE_S = 1
#: Connections the kernel queues before the server accepts them (uvicorn's default).
BACKLOG = 2048
#: How often the start-up announcement looks whether the model has finished loading.
ANNOUNCE_POLL_S = 0.1


class CannotListen(InferenceError):
    """The server cannot bind its host and port (taken, or an address this machine lacks)."""

    code = "cannot_listen"


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or ``CannotListen`` saying what to change."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # Listening at once holds the port: two sockets with SO_REUSEADDR may both bind one
        # that nobody listens on yet, and the second would fail later, inside uvicorn.
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CannotListen(
                f"port {port} on {host} is already in use (is another server running?); "
                f"stop it, or pick a free port: --port {port + 1} (or PORT={port + 1})"
            ) from None
        raise CannotListen(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; check --host and --port"
        ) from None
    sock.set_inheritable(True)
    return sock


def base_url(sock: socket.socket) -> str:
    """The URL a browser on this machine opens for ``sock`` (a wildcard bind is localhost)."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


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
        self._announcing: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if sockets:
            url = base_url(sockets[0])
            log.info("listening on %s; loading the model %r", url, self.service.model.name)
            self._announcing = asyncio.create_task(self._announce(url))

    async def _announce(self, url: str) -> None:
        """Once the model is ready, log the URLs a person opens next (nothing if it failed)."""
        while self.service.engine.phase in ("created", "loading"):
            await asyncio.sleep(ANNOUNCE_POLL_S)
        if not self.service.engine.ready:
            return
        ui = self.app.state.ui_unavailable or f"web UI {url}/ui/"
        log.info("serving: API %s/ · docs %s/docs · %s", url, url, ui)

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
    fleet = Fleet.from_settings(settings)
    service = fleet.default
    sock = bind(settings.host, settings.port)
    app = create_app(settings, fleet=fleet)
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
    DrainingServer(config, app, service, settings.shutdown_grace_s).run(sockets=[sock])
