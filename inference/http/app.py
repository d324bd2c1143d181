"""The FastAPI app factory: state, lifespan, routers, error handlers, middleware.

``create_app(settings, service)`` builds an app around a service; without one it builds the
service from settings and loads it in the background, so /health and / answer while the model
loads (a Space's health probe and a Modal cold start both need that). The app serves its own
routes (``info``: /, /health, /ready, /metrics) and a list of protocols
(``inference.http.protocols``), taking from each its routers, image-carrying paths, error body,
document edits and lifespan. ``uvicorn inference.http.app:app`` serves the default app.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from functools import cache
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from inference import __version__
from inference.fleet import Fleet
from inference.http import admin, info
from inference.http.errors import install_error_handlers
from inference.http.metrics import Metrics
from inference.http.middleware import BodySizeLimit, MetricsMiddleware
from inference.http.openapi import install_openapi
from inference.http.protocols import Protocol, cog, native, openai, replicate
from inference.http.ratelimit import RateLimit
from inference.logs import configure_logging
from inference.service import Service
from inference.settings import Settings, get_settings

log = logging.getLogger(__name__)

#: The protocols this server speaks; a new one is a package in ``inference/http/protocols/``
#: and one entry here (or in the ``protocols`` a runtime passes to ``create_app``).
DEFAULT_PROTOCOLS: tuple[Protocol, ...] = (
    native.PROTOCOL,
    replicate.PROTOCOL,
    cog.PROTOCOL,
    openai.PROTOCOL,
)

_PARAMETER = re.compile(r"\{[^}]*\}")


def image_paths(templates: Iterable[str]) -> re.Pattern[str]:
    """One pattern for the path templates (``/predictions/{id}``) whose POST and PUT bodies may
    carry images; they get the larger body limit, room for two images of MAX_IMAGE_BYTES. A
    ``{parameter}`` stands for one path segment, as it does in a route."""
    return re.compile(
        "|".join(
            "^" + "[^/]+".join(re.escape(part) for part in _PARAMETER.split(template)) + "$"
            for template in templates
        )
    )


def create_app(
    settings: Settings | None = None,
    service: Service | None = None,
    protocols: Sequence[Protocol] = DEFAULT_PROTOCOLS,
    fleet: Fleet | None = None,
) -> FastAPI:
    """Build the HTTP app serving ``protocols``. An injected service (``fleet``'s default
    version when a fleet is given) is started if needed but never stopped here; the fleet's
    other versions are."""
    service = fleet.default if fleet is not None else service
    settings = settings or (service.settings if service else get_settings())
    # Protocols that share a resource (Replicate's and Cog's prediction store) share its
    # lifespan, which runs once.
    lifespans = list(dict.fromkeys(p.lifespan for p in protocols if p.lifespan is not None))
    owns_service = service is None
    if fleet is None:
        fleet = Fleet.from_settings(settings) if service is None else Fleet.around(service)
    service = fleet.default

    @asynccontextmanager
    async def lifespan(served: FastAPI) -> AsyncIterator[None]:
        loading = None
        if service.engine.phase == "created":
            # Load in a thread so the server answers /health and / while the weights load.
            loading = asyncio.create_task(asyncio.to_thread(service.start))
            loading.add_done_callback(lambda t: t.cancelled() or t.exception())
        async with AsyncExitStack() as stack:
            for protocol_lifespan in lifespans:
                await stack.enter_async_context(protocol_lifespan(served))
            yield
        fleet.stop()
        if owns_service:
            service.stop()
        if loading is not None and not loading.done():
            log.warning("shutting down while the model is still loading")

    # FastAPIOffline serves /docs from packaged Swagger UI assets: a Space or a laptop
    # without internet still shows the docs (FastAPI's own /docs loads them from a CDN).
    app = FastAPIOffline(
        title="diffusion-serve",
        version=__version__,
        summary="Text-to-image inference with dynamic batching.",
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.service = service
    app.state.fleet = fleet
    app.state.metrics = metrics = Metrics(service, app.state, fleet)
    #: Called on the event loop when shutdown begins, to end long-lived streams (Gradio's).
    app.state.stream_closers = []
    app.state.rate_limit = RateLimit(settings) if settings.rate_limit_per_minute else None
    install_error_handlers(app)
    app.include_router(info.router)
    app.include_router(admin.router)
    for protocol in protocols:
        for router in protocol.routers:
            app.include_router(router)
    errors = [p.errors.model for p in protocols if p.errors is not None]
    edits = [p.openapi for p in protocols if p.openapi is not None]
    install_openapi(app, service.validator.limits, settings, errors, edits)

    # The browser UI at /ui calls this same service (gradio is imported only inside mount_ui).
    from inference.ui import UPLOAD_PATH, mount_ui

    mount_ui(app, service, settings)

    # The last added runs first: metrics outermost, so refused bodies (413) are counted too;
    # CORS outside the size limit and auth, so their errors reach a browser app readably.
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        image_max_bytes=settings.max_image_body_bytes,
        image_paths=image_paths([*(t for p in protocols for t in p.image_paths), UPLOAD_PATH]),
    )
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "HEAD", "POST", "PUT", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Accept", "Prefer", "X-Session-Id"],
            expose_headers=[
                "Retry-After",
                "X-Seed",
                "X-Model",
                "X-Model-Version",
                "X-Batch-Size",
                "Server-Timing",
            ],
            max_age=600,
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


@cache
def _default_app() -> FastAPI:
    settings = get_settings()
    configure_logging(settings.log_level)  # the CLI does this; bare uvicorn does not
    return create_app(settings)


def __getattr__(name: str) -> Any:
    """``inference.http.app:app`` for uvicorn, built on first access so importing reads no env."""
    if name == "app":
        return _default_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
