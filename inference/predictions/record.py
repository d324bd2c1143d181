"""One prediction as both protocols see it, and the only code that changes its state.

Replicate and Cog share a vocabulary (statuses starting, processing, succeeded, failed,
canceled; webhook events start, output, logs, completed), so one record serves both; the
envelopes each protocol renders live in ``envelopes``. Every transition is a method here that
returns the webhook events it causes, so the in-process store and the Modal job side (which run
the same transitions in different places) cannot drift apart. The record is plain data: it is
pickled to Modal workers and stored in a ``modal.Dict``.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from inference.errors import ContentFlagged
from inference.results import GenerateResult, unflagged
from inference.schema import Job

Status = Literal["starting", "processing", "succeeded", "failed", "canceled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})
Event = Literal["start", "output", "logs", "completed"]
EVENTS: tuple[Event, ...] = ("start", "output", "logs", "completed")
Protocol = Literal["replicate", "cog"]
#: Ids a client may choose (Cog's PUT /predictions/{id}); ours are longer and random.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
#: A page's cursor in a list of predictions: ``<created_at>_<id>`` (Replicate's list route);
#: every string that matches is one the list can start after.
CURSOR = re.compile(rf"^[0-9]{{1,20}}(?:\.[0-9]{{1,20}})?_{ID_PATTERN.pattern[1:]}")
#: Logs beyond this keep their tail: a 150-step progress log is ~10 kB.
MAX_LOG_CHARS = 64_000
BAR_WIDTH = 20


def new_id() -> str:
    """An unguessable id (128 random bits) in Replicate's alphabet: lower case and digits."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(26))


@dataclass(frozen=True)
class OutputFile:
    """One output file: its bytes and the name Cog would give it (``out-0.png``)."""

    name: str
    media_type: str
    data: bytes


@dataclass
class Prediction:
    """A prediction's state; see the module docstring. Times are Unix seconds."""

    id: str
    protocol: Protocol
    input: dict[str, Any]
    model: str = ""
    version: str = ""
    base_url: str = ""
    #: Outputs as URLs under ``base_url`` (PREDICTIONS_OUTPUT=url) instead of data: URIs.
    output_urls: bool = False
    webhook: str | None = None
    events: frozenset[str] = frozenset(EVENTS)
    status: Status = "starting"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    completed_at: float | None = None
    outputs: list[OutputFile] | None = None
    error: str | None = None
    logs: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    #: Bytes the store counts for this prediction before its images exist.
    reserved_bytes: int = 0
    #: The input's size as JSON, measured once (-1: not yet): the store sums every
    #: prediction's size on each creation, and re-serialising a 9 MB image input each time
    #: held the event loop for 80 ms per stored prediction.
    input_bytes: int = -1
    #: The input as the JSON an answer echoes, written once off the loop when it is large
    #: (``bodies.keep_input_json``): Replicate's every answer echoes the input, and writing a
    #: 9 MB image string as JSON on the loop held it for ~30 ms per answer. Not in ``to_dict``.
    input_json: bytes | None = field(default=None, repr=False)
    #: Bumped by the store on every change, so a reader can wait for the next one.
    revision: int = 0

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def size_bytes(self) -> int:
        """What this prediction holds: input, logs and images (or the images' reservation)."""
        images = sum(len(o.data) for o in self.outputs or ())
        if self.input_bytes < 0:
            self.input_bytes = json_size(self.input)
        held = self.input_bytes + len(self.input_json or b"") + len(self.logs)
        return held + max(images, 0 if self.done else self.reserved_bytes)

    def copy(self) -> Prediction:
        """A snapshot for a reader on another task or thread (outputs are immutable)."""
        return replace(self, input=dict(self.input), metrics=dict(self.metrics))

    # -- transitions: each returns the events it causes --------------------------------------

    def start(self, now: float | None = None) -> list[Event]:
        """The model began on it (its first step): ``processing``."""
        if self.status != "starting":
            return []
        self.status, self.started_at = "processing", now or time.time()
        return ["start"]

    def step(self, step: int, total: int, now: float | None = None) -> list[Event]:
        """One denoising step done: a progress line in the logs, as tqdm writes it."""
        if self.done:
            return []
        now = now or time.time()
        events = self.start(now)
        self.log(progress_line(step, total, now - (self.started_at or now)))
        return [*events, "logs"]

    def log(self, line: str) -> None:
        self.logs = (self.logs + line + "\n")[-MAX_LOG_CHARS:]

    def succeed(self, result: GenerateResult, now: float | None = None) -> list[Event]:
        """Images and metrics from the engine's result (also for a Modal call's result)."""
        if self.done and self.status != "succeeded":
            return []
        now = now or time.time()
        try:
            kept = unflagged(result)  # Replicate's and Cog's models leave flagged images out
        except ContentFlagged as exc:
            return [*self.start(now), *self.fail(exc.message, now)]
        events = self.start(now)
        if self.status != "succeeded":
            for i in sorted(set(range(len(result.images))) - {i for i, _ in kept}):
                self.log(f"NSFW content detected in image {i}")
        self.outputs = [
            OutputFile(f"out-{i}.{image.format}", image.media_type, image.data)
            for i, (_, image) in enumerate(kept)
        ]
        timings = result.timings
        self.metrics = {
            "predict_time": (timings.inference_ms + timings.encode_ms) / 1000,
            "total_time": timings.total_ms / 1000,
            "seed": result.seed,
            "batch_size": result.batch_size,
            "model": result.model,
        }
        if self.status != "succeeded":
            self.log(f"seed={result.seed} batch_size={result.batch_size} model={result.model}")
            self.status, self.completed_at = "succeeded", now
            return [*events, "output", "completed"]
        return []

    def fail(self, message: str, now: float | None = None) -> list[Event]:
        if self.done:
            return []
        self.status, self.error, self.completed_at = "failed", message, now or time.time()
        return ["completed"]

    def cancel(self, now: float | None = None) -> list[Event]:
        if self.done:
            return []
        self.status, self.completed_at = "canceled", now or time.time()
        return ["completed"]

    # -- as plain data: what a shared store (Modal's Dicts) keeps --------------------------------

    #: The schema version of ``to_dict``; bump it when a field changes meaning (not a field).
    RECORD_VERSION = 1
    #: Bytes, not JSON types: the images, and the input's JSON (rewritten from ``input``).
    NOT_IN_DICT = frozenset({"outputs", "input_json"})

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON types with its schema version, without the images.

        A pickled class would be read back with whatever code the reading container runs, so a
        redeploy that changes this class could break predictions in flight; plain data does not.
        """
        from dataclasses import fields  # here, to keep this section self-contained

        kept = [f.name for f in fields(self) if f.name not in self.NOT_IN_DICT]
        data = {name: getattr(self, name) for name in kept}
        return {
            "v": self.RECORD_VERSION,
            **data,
            "input": dict(self.input),
            "events": sorted(self.events),
            "metrics": dict(self.metrics),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Prediction:
        """A record written by ``to_dict`` of this or an earlier schema version (a field added
        later takes its default); the images and the input's JSON are not in it."""
        from dataclasses import fields

        version = data.get("v")
        if version != cls.RECORD_VERSION:
            raise ValueError(
                f"prediction record version {version!r} is not one this code reads "
                f"({cls.RECORD_VERSION}); deploy the version that wrote it or a newer one"
            )
        missing = [name for name in ("id", "protocol", "input") if name not in data]
        if missing:
            raise ValueError(f"prediction record lacks {', '.join(missing)}: {sorted(data)}")
        known = {f.name for f in fields(cls)} - cls.NOT_IN_DICT
        values = {name: value for name, value in data.items() if name in known}
        if "events" in values:
            values["events"] = frozenset(values["events"])
        return cls(**values)


def reserve_bytes(job: Job) -> int:
    """An upper bound on a job's encoded images: raw RGB plus headroom for PNG's framing."""
    return job.num_outputs * (job.width * job.height * 3 + 4096)


def progress_line(step: int, total: int, elapsed_s: float) -> str:
    """`` 45%|█████████           | 9/20 [00:01<00:01,  8.50it/s]``: tqdm's format, which
    Replicate shows for a sampler and its client parses into ``prediction.progress``."""
    total = max(total, 1)
    filled = BAR_WIDTH * step // total
    timing = f"{_clock(elapsed_s)}<?, ?it/s"  # tqdm's way of saying "not measured yet"
    if elapsed_s > 0:
        rate = step / elapsed_s
        timing = f"{_clock(elapsed_s)}<{_clock((total - step) / rate)}, {rate:.2f}it/s"
    bar = "█" * filled + " " * (BAR_WIDTH - filled)
    return f"{100 * step // total:3d}%|{bar}| {step}/{total} [{timing}]"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"


def json_size(value: Any) -> int:
    """About the bytes ``value`` takes as JSON, without writing it: a string counts its
    characters (escapes are not counted). Serialising a 9 MB image string is one C call that
    holds the GIL for ~80 ms, in whatever thread it runs, and a budget needs no exact figure."""
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, dict):
        return 2 + sum(json_size(str(k)) + 1 + json_size(v) + 1 for k, v in value.items())
    if isinstance(value, list | tuple):
        return 2 + sum(json_size(v) + 1 for v in value)
    return len(json.dumps(value, default=str))
