"""Prometheus metrics for one app instance (its own registry, so several apps can coexist)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.datastructures import State

from inference.fleet import Fleet
from inference.predictions.store import LocalStore
from inference.registry import VersionRef
from inference.service import Service

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)

#: Engine counters (``EngineStats`` fields) exported as they are at each scrape.
ENGINE_COUNTERS = {
    "model_calls": ("inference_model_calls", "Model calls that returned images."),
    "images_generated": ("inference_images_generated", "Images generated."),
    "failed_batches": ("inference_failed_batches", "Model calls that raised."),
    "abandoned_batches": (
        "inference_abandoned_batches",
        "Batches stopped between steps because every caller had gone.",
    ),
    "dropped_requests": (
        "inference_dropped_requests",
        "Requests dropped before their batch ran (caller gone or deadline passed).",
    ),
}


#: The loaded-adapter LRU's counters (``CacheStats`` fields), for backends that have one.
ADAPTER_COUNTERS = {
    "hits": ("inference_lora_cache_hits", "Adapter uses served from the loaded-adapter cache."),
    "misses": ("inference_lora_cache_misses", "Adapter uses that had to load the adapter."),
    "evictions": ("inference_lora_cache_evictions", "Adapters unloaded to make room (LRU)."),
}


class AdapterCollector(Collector):
    """The adapter cache's counters and size at scrape time (zeros for a model without one)."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        adapters = getattr(self.service.model, "adapters", None)
        stats = adapters.cache.stats if adapters is not None else None
        for field, (name, documentation) in ADAPTER_COUNTERS.items():
            yield CounterMetricFamily(name, documentation, value=getattr(stats, field, 0))
        loaded = adapters.info() if adapters is not None else []
        yield GaugeMetricFamily("inference_lora_loaded", "Adapters loaded now.", len(loaded))
        yield GaugeMetricFamily(
            "inference_lora_loaded_bytes",
            "Adapter file bytes loaded now.",
            sum(entry["bytes"] for entry in loaded),
        )


class EngineCollector(Collector):
    """Reads the engine's own counters at scrape time: one source of truth, no double count."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterator[CounterMetricFamily]:
        stats = self.service.engine.stats
        for field, (name, documentation) in ENGINE_COUNTERS.items():
            yield CounterMetricFamily(name, documentation, value=getattr(stats, field))


class CacheCollector(Collector):
    """The result cache's counters and size, read at scrape time from the cache itself."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        cache = self.service.cache
        if cache is None:  # RESULT_CACHE_MB=0: no series that would always read 0
            return
        for name, documentation, value in (
            ("inference_result_cache_hits", "Results served from the cache.", cache.hits),
            ("inference_result_cache_misses", "Seeded requests computed.", cache.misses),
        ):
            yield CounterMetricFamily(name, documentation, value=value)
        yield GaugeMetricFamily(
            "inference_result_cache_bytes", "Image bytes held by the cache.", value=cache.bytes
        )
        yield GaugeMetricFamily(
            "inference_result_cache_entries", "Results held by the cache.", value=len(cache)
        )


class StoreCollector(Collector):
    """Each in-memory store's size, read from the store's own accounting at scrape time.

    One family labelled by store, so a dashboard can add them up and hold the sum against the
    README's memory ceiling: ``predictions`` (the in-process prediction store; absent when a
    runtime installed another, e.g. Modal's), ``image_links`` (OpenAI ``url`` images),
    ``result_cache``, ``lora_cache`` (loaded adapters' file bytes) and ``files`` (Replicate's
    file uploads, kept until a prediction reads them). Other multipart uploads are not kept: they
    live as long as their request.
    """

    def __init__(self, service: Service, state: State) -> None:
        self.service = service
        self.state = state

    def usage(self) -> dict[str, tuple[int, int]]:
        """(items, bytes) by store name."""
        found: dict[str, tuple[int, int]] = {}
        predictions = getattr(self.state, "prediction_store", None)
        if isinstance(predictions, LocalStore):
            found["predictions"] = predictions.usage()
        images = getattr(self.state, "image_store", None)
        found["image_links"] = (len(images), images.bytes) if images is not None else (0, 0)
        files = getattr(self.state, "file_store", None)
        found["files"] = (len(files), files.bytes) if files is not None else (0, 0)
        cache = self.service.cache
        found["result_cache"] = (len(cache), cache.bytes) if cache is not None else (0, 0)
        adapters = getattr(self.service.model, "adapters", None)
        loaded = adapters.info() if adapters is not None else []
        found["lora_cache"] = (len(loaded), sum(entry["bytes"] for entry in loaded))
        return found

    def collect(self) -> Iterator[GaugeMetricFamily]:
        items = GaugeMetricFamily(
            "inference_store_items", "Items held by each in-memory store.", labels=["store"]
        )
        held = GaugeMetricFamily(
            "inference_store_bytes", "Bytes held by each in-memory store.", labels=["store"]
        )
        for name, (count, nbytes) in self.usage().items():
            items.add_metric([name], count)
            held.add_metric([name], nbytes)
        yield items
        yield held


class FleetCollector(Collector):
    """Each registry version's state at scrape time: loaded or not, and its queue."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def collect(self) -> Iterator[GaugeMetricFamily]:
        loaded = GaugeMetricFamily(
            "inference_version_loaded", "1 while a version is loaded.", labels=LABELS
        )
        queued = GaugeMetricFamily(
            "inference_version_queue_depth", "Requests waiting, by version.", labels=LABELS
        )
        for name, spec in self.fleet.registry.models.items():
            for version in spec.versions:
                service = self.fleet.service(version.ref)
                labels = [name, version.name]
                loaded.add_metric(labels, 0.0 if service is None else 1.0)
                queued.add_metric(labels, 0 if service is None else service.engine.queue_depth)
        yield loaded
        yield queued


#: Labels of the per-version series; their values come from the registry only (bounded).
LABELS = ["model", "version"]


class Metrics:
    def __init__(self, service: Service, state: State, fleet: Fleet | None = None) -> None:
        """``state``: the app's, where the prediction and image-link stores are put;
        ``fleet``: the registry's versions, counted by model and version."""
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "http_requests",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "inference_batch_size_images",
            "Images per model call.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "inference_batch_duration_seconds",
            "Duration of each model call.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rate_limited = Counter(
            "http_rate_limited", "Requests refused with 429 (RATE_LIMIT_PER_MINUTE).", registry=r
        )
        self.steps = Counter(
            "inference_denoising_steps", "Denoising steps run (per model call).", registry=r
        )
        r.register(EngineCollector(service))
        r.register(CacheCollector(service))
        r.register(AdapterCollector(service))
        r.register(StoreCollector(service, state))
        if fleet is not None:
            self._count_versions(fleet)
        gauges = {
            "inference_queue_depth": (
                "Requests waiting for a batch.",
                lambda: service.engine.queue_depth,
            ),
            "inference_model_ready": (
                "1 once the model is loaded and warm.",
                lambda: 1.0 if service.engine.ready else 0.0,
            ),
            "inference_model_load_seconds": (
                "Time to load the model weights.",
                lambda: service.engine.stats.load_s or 0.0,
            ),
            "inference_model_warmup_seconds": (
                "Time of the warm-up generation.",
                lambda: service.engine.stats.warmup_s or 0.0,
            ),
        }
        for name, (documentation, read) in gauges.items():
            Gauge(name, documentation, registry=r).set_function(read)

        def on_batch(size: int, seconds: float) -> None:
            self.batch_size.observe(size)
            self.batch_seconds.observe(seconds)

        service.engine.add_batch_listener(on_batch)
        service.engine.add_step_listener(lambda step, total: self.steps.inc())

    def _count_versions(self, fleet: Fleet) -> None:
        requests = Counter(
            "inference_version_requests",
            "Requests each registry version served, by outcome (ok or error).",
            [*LABELS, "outcome"],
            registry=self.registry,
        )
        latency = Histogram(
            "inference_version_request_duration_seconds",
            "Time each request held its version (queue, model call, encoding).",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(FleetCollector(fleet))

        def on_request(ref: VersionRef, seconds: float, outcome: str) -> None:
            requests.labels(ref.model, ref.version, outcome).inc()
            latency.labels(ref.model, ref.version).observe(seconds)

        fleet.add_request_listener(on_request)
