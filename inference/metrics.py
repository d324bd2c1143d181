"""Prometheus metrics for one app instance (its own registry, so several apps can coexist)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from inference.engine import Engine

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
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
        self.images = Counter("inference_images_generated", "Images generated.", registry=r)
        self.steps = Counter(
            "inference_denoising_steps", "Denoising steps run (per model call).", registry=r
        )
        self.queue_depth = Gauge(
            "inference_queue_depth", "Requests waiting for a batch.", registry=r
        )
        self.ready = Gauge(
            "inference_model_ready", "1 once the model is loaded and warm.", registry=r
        )
        self.load_seconds = Gauge(
            "inference_model_load_seconds", "Time to load the model weights.", registry=r
        )
        self.warmup_seconds = Gauge(
            "inference_model_warmup_seconds", "Time of the warm-up generation.", registry=r
        )

    def bind(self, engine: Engine) -> None:
        """Feed the engine's events and state into the metrics."""

        def on_batch(size: int, seconds: float) -> None:
            self.batch_size.observe(size)
            self.batch_seconds.observe(seconds)
            self.images.inc(size)

        engine.add_batch_listener(on_batch)
        engine.add_step_listener(lambda step, total: self.steps.inc())
        self.queue_depth.set_function(lambda: engine.queue_depth)
        self.ready.set_function(lambda: 1.0 if engine.ready else 0.0)
        self.load_seconds.set_function(lambda: engine.stats.load_s or 0.0)
        self.warmup_seconds.set_function(lambda: engine.stats.warmup_s or 0.0)
