"""Several models and versions in one process: one ``Service`` per registry version (issue 23).

A version is exactly what a ``Service`` already is, "one model, validated and batched", built
from ``version.settings``: its validator holds the version's limits and defaults, its engine
the version's queue and batching, its result cache the version's results (so a cache key
never crosses versions). The fleet adds only what lies between the services: routing (the
registry), loading on first use under a budget (``MAX_LOADED_MODELS``, least recently used
unloaded first, like Ray Serve's model multiplexing), and the counts an operator watches.
With ``HOST_CACHED_MODELS`` an unloaded version's weights wait in host memory (the backend's
``preload()``), so switching back to it costs a copy to the device, not a read from disk.

The default version is built at start like the one service of a server without a registry and
never unloaded: /ready, /health, the UI, Cog and batch jobs serve it, exactly as before. Without
``MODELS_FILE`` it is the only version, every route lands on it, and a request pays one dict
lookup and a counter for the routing.

A request holds its version through ``serving`` (a lease): a version with requests in flight
is never unloaded under them. When the budget is full and every loaded version is busy, the
new version loads anyway and the budget is restored as soon as one is idle: a request never
waits on another model's traffic to be served.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from inference import blocking
from inference.engine.batcher import Progress
from inference.errors import NotReady, RequestTimeout
from inference.models import Model, build_model
from inference.models.devices import visible_gpus
from inference.registry import Registry, Version, VersionRef
from inference.results import GenerateResult
from inference.schema import Job
from inference.service import Service, Submit
from inference.settings import Settings

log = logging.getLogger(__name__)

Outcome = Literal["ok", "error"]
#: Called after each request a version served: (version, seconds, outcome); for /metrics.
RequestListener = Callable[[VersionRef, float, Outcome], None]


@dataclass
class VersionCounts:
    """What an operator watches per version: requests served and failed, loads, in flight."""

    served: int = 0
    failed: int = 0
    loads: int = 0
    in_flight: int = 0


@dataclass(frozen=True)
class Routed:
    """The version a request was routed to and the service that serves it."""

    ref: VersionRef
    service: Service


def default_ref(registry: Registry) -> VersionRef:
    """The version served to a request that names no model and to front doors that cannot name
    one (Cog, the UI): the registry's pinned default, else its default model's heaviest version
    (the first of equals), which is what most of that model's traffic reaches anyway."""
    model = registry.models[registry.default_model]
    if registry.default_version is not None:
        return VersionRef(model.name, registry.default_version)
    weights = registry.weights(model.name)
    return VersionRef(model.name, max(model.version_names, key=lambda name: weights[name]))


class Fleet:
    """Every version of a registry, each served by its own ``Service`` once loaded."""

    def __init__(
        self,
        registry: Registry,
        default: Service,
        *,
        max_loaded: int | None = None,
        build: Callable[[Version], Service] = lambda version: Service.from_settings(
            version.settings
        ),
        host_cached: int = 0,
    ) -> None:
        """``default`` serves ``default_ref(registry)``; others are built with ``build`` from
        their ``Version`` (its settings, and which one it is) on first use, at most
        ``max_loaded`` of them at once, and ``host_cached`` unloaded ones keep their weights
        in host memory."""
        self.registry = registry
        self.default_ref = default_ref(registry)
        self.default = default
        self.max_loaded = max_loaded
        self._build = build
        self._lock = threading.Lock()
        #: Loaded versions besides the default, least recently used first.
        self._loaded: OrderedDict[VersionRef, Service] = OrderedDict()
        self._loading: dict[VersionRef, concurrent.futures.Future[Service]] = {}
        self._load_errors: dict[VersionRef, str] = {}
        self.host_cached = host_cached
        #: Unloaded versions' models with their weights in host memory, oldest first.
        self._parked: OrderedDict[VersionRef, Model] = OrderedDict()
        self.counts = {
            version.ref: VersionCounts()
            for spec in registry.models.values()
            for version in spec.versions
        }
        self.counts[self.default_ref].loads = 1
        self._listeners: list[RequestListener] = []
        self._stopped = False
        # One loader: versions load one at a time, so two first requests never put two
        # models' weights on the device at once on top of the budget.
        self._loader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model-load")
        # Evicted versions stop here, never on the caller's thread: a request lets go of its
        # version on the event loop, and a stop joins the version's worker, which may be
        # waiting its turn on the device behind another version's long call.
        self._unloader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model-unload")

    @classmethod
    def from_settings(cls, settings: Settings) -> Fleet:
        """The registry ``settings`` describe (``MODELS_FILE``, else ``MODEL`` alone), with its
        default version built (not loaded: ``start`` loads it). Raises ``RegistryError``."""
        registry = Registry.from_settings(settings)
        ref = default_ref(registry)
        service = Service.from_settings(registry.version(ref).settings)
        return cls(
            registry,
            service,
            max_loaded=settings.max_loaded_models,
            host_cached=settings.host_cached_models,
        )

    @classmethod
    def around(cls, service: Service) -> Fleet:
        """A fleet whose default version is ``service`` (built by a runtime or a test)."""
        settings = service.settings
        return cls(
            Registry.from_settings(settings),
            service,
            max_loaded=settings.max_loaded_models,
            host_cached=settings.host_cached_models,
        )

    def add_request_listener(self, listener: RequestListener) -> None:
        self._listeners.append(listener)

    # -- routing -----------------------------------------------------------------------------

    @asynccontextmanager
    async def serving(self, model: str | None, sticky: str | None = None) -> AsyncIterator[Routed]:
        """The version that serves a request naming ``model`` (None: the default model), held
        while the block runs; loads it first if needed, waiting at most REQUEST_TIMEOUT_S.
        Raises ``UnknownModel`` for a name this server lacks, ``NotReady`` when the version
        failed to load (the next request tries again)."""
        ref = self.registry.route(model, sticky)
        async with self.holding(ref) as service:
            yield Routed(ref, service)

    @asynccontextmanager
    async def holding(self, ref: VersionRef) -> AsyncIterator[Service]:
        """``ref``'s service, loaded if needed and kept loaded while the block runs."""
        service = await self._acquire(ref)
        start = time.perf_counter()
        outcome: Outcome = "error"
        try:
            yield service
            outcome = "ok"
        finally:
            self._release(ref, time.perf_counter() - start, outcome)

    async def submit(self, request: Mapping[str, Any], sticky: str | None = None) -> GenerateResult:
        """A request's fields with the ``model`` it may name (a name, ``name@version``, or none
        for the default model), served by the version it routes to and marked with it
        (``version``): how batch lines and Modal's ``generate`` reach a fleet, as /predict does."""
        fields = {name: value for name, value in request.items() if name != "model"}
        async with self.serving(request.get("model"), sticky) as routed:
            result = await routed.service.submit(fields)
        return result.model_copy(update={"version": str(routed.ref)})

    def generate(self, request: Mapping[str, Any], sticky: str | None = None) -> GenerateResult:
        """Blocking ``submit``, for callers without an event loop; safe from any thread."""
        return blocking.run(self.submit(request, sticky))

    def runner(self, ref: VersionRef) -> Submit:
        """``submit`` on ``ref``'s version for work that outlives its request (a prediction):
        the version is held (or loaded again) while the job runs, not while it was created."""

        async def submit(job: Job, progress: Progress | None = None) -> GenerateResult:
            async with self.holding(ref) as service:
                return await service.submit(job, progress)

        return submit

    def service(self, ref: VersionRef) -> Service | None:
        """The loaded service of ``ref``, or None."""
        return self.default if ref == self.default_ref else self._loaded.get(ref)

    async def _acquire(self, ref: VersionRef) -> Service:
        with self._lock:
            service = self.default if ref == self.default_ref else self._loaded.get(ref)
            if service is not None:
                if ref != self.default_ref:
                    self._loaded.move_to_end(ref)
                self.counts[ref].in_flight += 1
                return service
            future = self._loading.get(ref)
            if future is None:
                future = self._loading[ref] = self._loader.submit(self._load, ref)
        timeout = self.registry.version(ref).settings.request_timeout_s
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout)
        except TimeoutError:
            raise RequestTimeout(
                f"version {ref} did not load within {timeout:g} s (REQUEST_TIMEOUT_S); it goes "
                "on loading, retry shortly"
            ) from None
        return await self._acquire(ref)  # loaded: count it in flight under the lock

    def _release(self, ref: VersionRef, seconds: float, outcome: Outcome) -> None:
        with self._lock:
            counts = self.counts[ref]
            counts.in_flight -= 1
            if outcome == "ok":
                counts.served += 1
            else:
                counts.failed += 1
            evicted = self._evict()
        self._unload_later(evicted)
        for listener in self._listeners:
            listener(ref, seconds, outcome)

    # -- loading and unloading ---------------------------------------------------------------

    def _load(self, ref: VersionRef) -> Service:
        """Build and start ``ref``'s service (on the loader thread); a failure fails only the
        requests waiting for it, and the next request tries again."""
        log.info("loading version %s", ref)
        service: Service | None = None
        version = self.registry.version(ref)
        with self._lock:
            parked = self._parked.pop(ref, None)
        try:
            service = (
                Service(parked, version.settings) if parked is not None else self._build(version)
            )
            service.start()
        except Exception as exc:
            if service is not None:
                service.stop()
            message = f"version {ref} failed to load: {exc}; the next request for it tries again"
            log.warning("%s", message)
            with self._lock:
                self._loading.pop(ref, None)
                self._load_errors[ref] = message
            raise NotReady(message) from None
        with self._lock:
            self._loading.pop(ref, None)
            stopped = self._stopped
            if not stopped:
                self._load_errors.pop(ref, None)
                self._loaded[ref] = service
                self.counts[ref].loads += 1
                evicted = self._evict(keep=ref)
        if stopped:  # stop() came while it loaded and could not see it: nobody else stops it
            service.stop()
            raise NotReady("the server is shutting down; retry on another replica or later")
        self._unload_later(evicted)
        return service

    def _evict(self, keep: VersionRef | None = None) -> list[tuple[VersionRef, Service]]:
        """Idle versions to unload, least recently used first, until the budget holds; called
        under the lock. Busy versions stay (see the module's docstring)."""
        if self.max_loaded is None:
            return []
        evicted = []
        for ref in list(self._loaded):
            if len(self._loaded) <= self.max_loaded:
                break
            if ref != keep and self.counts[ref].in_flight == 0:
                evicted.append((ref, self._loaded.pop(ref)))
                log.info("unloading version %s (MAX_LOADED_MODELS=%d)", ref, self.max_loaded)
        return evicted

    def _unload_later(self, evicted: list[tuple[VersionRef, Service]]) -> None:
        """Stop ``evicted`` on the unloader thread (see ``__init__``; at once after ``stop``),
        and with ``host_cached`` queue their weights' read on the loader now, so it comes
        before any later load of them."""
        if not evicted:
            return
        try:
            self._unloader.submit(self._unload, evicted)
        except RuntimeError:  # the fleet stopped: nothing else will stop them
            self._unload(evicted)
        for ref, _ in evicted:
            if self.host_cached:
                # After stop() the loader refuses: nothing will load the version again.
                with contextlib.suppress(RuntimeError):
                    self._loader.submit(self._park, ref)

    def _unload(self, evicted: list[tuple[VersionRef, Service]]) -> None:
        for _, service in evicted:
            # Nothing is in flight on it (leases), so nothing waits for this stop.
            service.stop()

    def _park(self, ref: VersionRef) -> None:
        """Read ``ref``'s weights into host memory again (on the loader thread, so before any
        later load of it), for its next load to pick up; the oldest beyond ``host_cached`` go.

        A fresh model's ``preload()``, not the unloaded one's tensors: moving those back off the
        device is the backend's business, and the read happens while nobody waits for it."""
        settings = self.registry.version(ref).settings
        if settings.device == "auto" and visible_gpus():
            # preload() needs the device to pick DTYPE=auto; auto resolves to cuda here anyway.
            settings = settings.model_copy(update={"device": "cuda"})
        try:
            model = build_model(settings)
            preload = getattr(model, "preload", None)
            if not callable(preload) or not preload():
                return
        except Exception as exc:  # its next load reads from disk and reports the problem
            log.warning("version %s stays on disk only: %s", ref, exc)
            return
        with self._lock:
            if ref in self._loaded:
                return
            self._parked[ref] = model
            while len(self._parked) > self.host_cached:
                self._parked.popitem(last=False)

    def stop(self, grace_s: float = 0.0) -> None:
        """Stop every loaded version but the default, whose owner stops it."""
        with self._lock:
            self._stopped = True
            services = list(self._loaded.values())
            self._loaded.clear()
            self._parked.clear()
        for service in services:
            service.stop(grace_s)
        self._loader.shutdown(wait=False, cancel_futures=True)
        self._unloader.shutdown(wait=False)  # versions already evicted still stop

    # -- what an operator sees ---------------------------------------------------------------

    def table(self) -> list[dict[str, Any]]:
        """Each model with its versions, weights, loaded or not, queue depth and requests
        served: what GET / and GET /admin/models show."""
        models = []
        for name, spec in self.registry.models.items():
            weights = self.registry.weights(name)
            versions = []
            for version in spec.versions:
                ref, counts = version.ref, self.counts[version.ref]
                service = self.service(ref)
                state = "loaded" if service is not None else "unloaded"
                if ref in self._loading:
                    state = "loading"
                elif ref in self._parked:
                    state = "host memory"
                elif ref in self._load_errors:
                    state = "failed"
                versions.append(
                    {
                        "name": version.name,
                        "backend": version.backend,
                        "weight": weights[version.name],
                        "state": state,
                        "loaded": service is not None,
                        "queue_depth": service.engine.queue_depth if service is not None else 0,
                        "served": counts.served,
                        "failed": counts.failed,
                        "loads": counts.loads,
                        "error": self._load_errors.get(ref),
                    }
                )
            models.append(
                {
                    "name": name,
                    "description": spec.description,
                    "default": name == self.registry.default_model,
                    "versions": versions,
                }
            )
        return models
