"""The service: the one seam between every front door and the engine.

HTTP routes, the Gradio UI, Cog's predictor, Modal's class, batch jobs and the CLI all do the
same three things through it: build it once from settings (``Service.from_settings``, then
``start``), hand it a request (a dict or a ``GenerateRequest``) with ``generate`` or
``submit``, and translate the domain errors it raises (``inference.errors``) into their own
form. Validation happens once, in ``validation.Validator``; batching, in the engine; results of
requests that give a seed are reused through ``result_cache.ResultCache``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from inference import __version__, blocking
from inference.engine import Engine
from inference.engine.batcher import Preview, Progress
from inference.models import Model, build_model
from inference.models.devices import replica_settings
from inference.result_cache import ResultCache, model_identity
from inference.results import GenerateResult
from inference.schema import IMAGE_FIELDS, GenerateRequest, Job
from inference.settings import Settings
from inference.validation import Validator

Request = GenerateRequest | Mapping[str, Any]
T = TypeVar("T")
#: Runs a validated job somewhere (``Service.submit``, or a fleet's version held while it runs):
#: what a prediction store calls.
Submit = Callable[[Job, Progress | None], Awaitable[GenerateResult]]


class Service:
    """One model, validated and batched, behind one small API shared by every runtime."""

    def __init__(
        self,
        model: Model,
        settings: Settings | None = None,
        replicas: Sequence[Model] | None = None,
    ) -> None:
        """``model`` serves on the first device; with DEVICES naming several, a replica is
        built for each further one (the adapters build ``model`` before the service), unless
        ``replicas`` are given (stand-ins for a remote pool: ``models.remote``)."""
        self.settings = settings or Settings()
        self.model = model
        devices = replica_settings(self.settings)
        if replicas is None:
            replicas = [build_model(each) for each in devices[1:]]
        # Named devices: versions of a fleet that share one take turns on it (engine.arbiter).
        names = [each.device for each in devices]
        self._engine = Engine(model, self.settings, replicas, device_names=names)
        self._validator = Validator(model, self.settings)
        cache_bytes = int(self.settings.result_cache_mb * 2**20)
        self.cache = ResultCache(cache_bytes) if cache_bytes > 0 else None
        self._blocking = ThreadPoolExecutor(
            self.settings.max_blocking_workers, thread_name_prefix="request-io"
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Service:
        """The backend ``settings.model`` names, on DEVICES' first device; weights load in
        ``start``."""
        return cls(build_model(replica_settings(settings)[0]), settings)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Service:
        """Load and warm up the model; blocks. Raises what the load raised."""
        self._engine.start(self._validator.warm_up_job)
        return self

    def drain(self, grace_s: float) -> bool:
        """Refuse new requests, let queued and running ones finish for up to ``grace_s``."""
        return self._engine.drain(grace_s)

    def stop(self, grace_s: float = 0.0) -> None:
        """Stop serving, after draining for up to ``grace_s``; what is left fails with 503."""
        if grace_s > 0:
            self.drain(grace_s)
        self._engine.stop()
        # A validation still waiting on a slow host finishes unread; nothing waits for it.
        self._blocking.shutdown(wait=False, cancel_futures=True)

    @property
    def engine(self) -> Engine:
        """The engine, read-only: its ``phase``, ``ready``, ``load_error``, ``queue_depth``
        and ``stats``, and its batch and step listeners (for metrics and progress bars)."""
        return self._engine

    @property
    def validator(self) -> Validator:
        """The validator, read-only: the ``defaults`` and ``limits`` a request is held to
        (for the UI's controls and the OpenAPI document)."""
        return self._validator

    def require_ready(self) -> None:
        """Raise the engine's ``NotReady`` unless it serves: for front doors that must refuse
        before anything is queued (a prediction is created only once the model is loaded)."""
        if not self._engine.ready:
            raise self._engine.not_ready()

    # -- requests ----------------------------------------------------------------------------

    def job(self, request: Request) -> Job:
        """The request validated into a job (raises ``InvalidRequest`` naming the field).

        Blocking: an image is decoded and resized, an image URL fetched. Async code awaits
        ``job_async`` instead."""
        return self._validator.job(request)

    async def job_async(self, request: Request | Job) -> Job:
        """``job`` for async front doors, the one place that keeps validation off the loop.

        A request carrying images or adapters is validated in the blocking pool
        (MAX_BLOCKING_WORKERS): decoding a 7 MB upload, waiting on a slow image host or
        downloading an adapter would otherwise stall every request on the server. The pool is
        the service's own: the default executor encodes results and the engine's thread runs
        the model, and neither may wait behind a slow host. Any other request validates in
        microseconds, on the loop. Cancelling the awaiting task abandons the request; a
        validation already running finishes unread.
        """
        if isinstance(request, Job):
            return request
        if not validates_slowly(request, self.settings):
            return self.job(request)
        return await self.run_blocking(self.job, request)

    async def run_blocking(self, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` in the blocking pool: for a protocol's own translation that reads
        pixels before the request exists (OpenAI's mask), under the same bound as validation.
        Once the service has stopped (its pool with it), the answer is "shutting down"."""
        try:
            future = asyncio.get_running_loop().run_in_executor(self._blocking, work, *args)
        except RuntimeError:  # the pool was shut down by ``stop``
            raise self._engine.not_ready() from None
        return await future

    def generate(
        self,
        request: Request | Job,
        progress: Progress | None = None,
        preview: Preview | None = None,
    ) -> GenerateResult:
        """Blocking ``submit``, for callers without an event loop; safe from any thread.

        ``progress(step, total)`` follows this request's batch (on the engine's thread);
        ``preview(step, total, render)`` too, where the model offers previews
        (``engine.previews``). A result served from the cache runs neither.
        """
        return blocking.run(self.submit(request, progress, preview))

    async def submit(
        self,
        request: Request | Job,
        progress: Progress | None = None,
        preview: Preview | None = None,
    ) -> GenerateResult:
        """Async ``generate``, validating through ``job_async``; cancelling the awaiting task
        abandons the request."""
        job = await self.job_async(request)
        key = self._cache_key(job)
        if key is None or self.cache is None:
            return await self._engine.submit(job, progress, preview)
        return await self.cache.submit(key, lambda: self._engine.submit(job, progress, preview))

    def _cache_key(self, job: Job) -> Hashable | None:
        """The job's key in the result cache; None when it must be computed (no seed given)."""
        if self.cache is None or job.seed_drawn:
            return None
        key = (model_identity(self.model), job)
        try:
            hash(key)
        except TypeError:  # a Job field that cannot be hashed: computed, never cached
            return None
        return key

    def info(self) -> dict[str, Any]:
        """What GET / reports: model, phase, defaults and every limit a client must respect."""
        s = self.settings
        return {
            "name": "diffusion-serve",
            "version": __version__,
            "model": self.model.name,
            # "unknown": not loaded yet, or a class of your own that does not say (models.base).
            "safety_checker": getattr(self.model, "safety_checker", None) or "unknown",
            "phase": self._engine.phase,
            "ready": self._engine.ready,
            "defaults": vars(self._validator.defaults),
            "limits": {
                **vars(self._validator.limits),
                "max_batch_size": s.max_batch_size,
                "max_wait_ms": s.max_wait_ms,
                "max_queue_size": s.max_queue_size,
                "request_timeout_s": s.request_timeout_s,
                "max_batch_requests": s.max_batch_requests,
                "max_body_bytes": s.max_body_bytes,
                "result_cache_mb": s.result_cache_mb,
                "max_image_bytes": s.max_image_bytes,
                "max_image_pixels": s.max_image_pixels,
                "max_image_body_bytes": s.max_image_body_bytes,
                "image_url_hosts": list(s.input_url_hosts.patterns),
            },
            "auth": s.auth_token is not None,
            "docs": "/docs",
            "loras": self.loaded_adapters(),
        }

    def loaded_adapters(self) -> list[dict[str, Any]]:
        """The LoRA adapters the model holds loaded now (least recently used first)."""
        adapters = getattr(self.model, "adapters", None)
        return adapters.info() if adapters is not None else []


def validates_slowly(request: Request, settings: Settings) -> bool:
    """Whether validating ``request`` may take long: images to decode (or fetch), or adapters,
    which validation downloads when they are not here yet (``lora.support.Adapters.check``)."""
    if carries_images(request):
        return True
    if isinstance(request, GenerateRequest):
        loras = request.loras
    elif isinstance(request, Mapping):
        loras = request.get("loras")
    else:
        return False  # not a request at all: validation says so, at once
    return bool(loras if loras is not None else settings.default_loras)


def carries_images(request: Request) -> bool:
    """Whether a request has an image field set (its decoding is the slow part of validation)."""
    if isinstance(request, GenerateRequest):
        return any(getattr(request, name) is not None for name in IMAGE_FIELDS)
    return isinstance(request, Mapping) and any(request.get(name) for name in IMAGE_FIELDS)
