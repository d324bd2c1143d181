"""OpenAI's streamed images: server-sent events of partial images while the model runs, then
the images, for both routes of ``routes`` (``image_generation.*``, ``image_edit.*``).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from inference import codec
from inference.errors import InferenceError
from inference.http.protocols.openai.params import GenerationParams
from inference.http.protocols.openai.shapes import (
    NO_USAGE,
    OpenAIError,
    event,
    from_domain,
    partial_steps,
)
from inference.results import GenerateResult, unflagged
from inference.schema import Job
from inference.service import Service


@dataclass(frozen=True)
class FinalImage:
    """One image as the client gets it: its index among the request's images (flagged ones
    left out), its seed, and its bytes in the format asked for."""

    index: int
    seed: int
    data: bytes
    media_type: str


#: The prefix of a route's stream events.
EventKind = Literal["image_generation", "image_edit"]


async def stream_images(
    service: Service, job: Job, params: GenerationParams, created: int, kind: EventKind
) -> StreamingResponse:
    """Partial images (``{kind}.partial_image``) as the model's previews arrive, then one
    ``{kind}.completed`` per image; an error after the start is an error event.

    The request is queued before the response starts, so a full queue or a model still loading
    is an HTTP 503 like any other, not an event. A cache hit has no partial images.
    """
    loop = asyncio.get_running_loop()
    lossy = service.engine.lossy  # the deployment's JPEG/WebP settings
    # The model's previews, then None once the submission is done (a done callback, so the
    # events read one queue and never need a second task to wait on both).
    previews: asyncio.Queue[list[np.ndarray] | None] = asyncio.Queue()
    wanted = params.partial_images or 0

    def on_preview(step: int, total: int, render: Callable[[], list[np.ndarray]]) -> None:
        if step in partial_steps(total, wanted):  # on the engine's thread: only copy pixels
            loop.call_soon_threadsafe(previews.put_nowait, render())

    task = asyncio.ensure_future(service.submit(job, preview=on_preview if wanted else None))
    task.add_done_callback(lambda _: previews.put_nowait(None))
    await asyncio.sleep(0)  # the submission runs up to its queueing: refusals surface here
    if task.done() and (refused := task.exception()) is not None:
        raise refused
    fmt, quality = params.recompressed or (job.output_format, None)
    common = {
        "created_at": created,
        "size": f"{job.width}x{job.height}",
        "output_format": fmt,
        "background": "opaque",
        "quality": "auto",
    }

    async def events() -> AsyncIterator[bytes]:
        index = 0
        try:
            while (images := await previews.get()) is not None:
                for i, pixels in enumerate(images):
                    data = await asyncio.to_thread(codec.encode, pixels, fmt, quality, lossy)
                    payload = {**common, "b64_json": b64(data), "partial_image_index": index}
                    yield event(f"{kind}.partial_image", {**payload, "image_index": i})
                index += 1
            images = await final_images(task.result(), params, lossy)
            yield _completed(images, common, params.identifier, kind)
        except InferenceError as exc:
            yield _error_event(from_domain(exc))
        except OpenAIError as exc:
            yield _error_event(exc)

    headers = {"Cache-Control": "no-store", **_cache_header_of(task)}
    return _SubmissionStream(task, events(), media_type="text/event-stream", headers=headers)


class _SubmissionStream(StreamingResponse):
    """A stream that owns its submission: however the response ends (done, the client gone
    mid-stream, or gone before the first event, when the events never start), the submission
    is cancelled, which abandons the request, and awaited, so no task outlives the response
    (asyncio logs "Task was destroyed but it is pending" for one that does).

    The route returns before the stream runs, so what the route held for the request (the
    fleet's lease on its version, which keeps the version from being unloaded under it) is
    handed to the stream with ``hold`` and let go only when the stream ends."""

    def __init__(self, task: asyncio.Future[GenerateResult], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.task = task
        self._held = AsyncExitStack()

    def hold(self, held: AsyncExitStack) -> None:
        """Keep ``held`` open (its contexts entered) until the stream ends."""
        self._held.push_async_exit(held)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.task.cancel()  # a no-op once it is done
            await asyncio.wait({self.task})
            if not self.task.cancelled():
                self.task.exception()  # read: a failure nobody streamed is not logged as lost
            await self._held.aclose()


def outlive(response: Response, held: AsyncExitStack) -> None:
    """Let ``held`` go with ``response``: at once for a complete response, when the stream
    ends for a stream (``_SubmissionStream.hold``)."""
    if isinstance(response, _SubmissionStream):
        response.hold(held.pop_all())


async def final_images(
    result: GenerateResult, params: GenerationParams, lossy: codec.LossyEncoding
) -> list[FinalImage]:
    """The result's unflagged images (a content-policy error when none is left) as the client
    asked for them: re-encoded at ``output_compression`` in a worker thread when it applies,
    with the deployment's other encoder settings (``lossy``: WebP effort)."""
    kept = unflagged(result)
    recompressed = params.recompressed
    if recompressed is None:
        return [FinalImage(i, image.seed, image.data, image.media_type) for i, image in kept]
    fmt, quality = recompressed
    images = []
    for i, image in kept:
        data = await asyncio.to_thread(codec.transcode, image.data, fmt, quality, lossy)
        images.append(FinalImage(i, image.seed, data, codec.FORMATS[fmt].media_type))
    return images


def _completed(
    images: list[FinalImage], common: dict[str, Any], identifier: str | None, kind: EventKind
) -> bytes:
    """Every completed event at once (so a content-policy error comes before any of them)."""
    extra = {"usage": NO_USAGE, **({"safety_identifier": identifier} if identifier else {})}
    return b"".join(
        event(
            f"{kind}.completed",
            {
                **common,
                **extra,
                "b64_json": b64(image.data),
                "image_index": image.index,
                "seed": image.seed,
            },
        )
        for image in images
    )


def _error_event(error: OpenAIError) -> bytes:
    return event("error", error.body())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def cache_header(result: GenerateResult) -> dict[str, str]:
    return {"X-Cache": result.cache} if result.cache else {}


def _cache_header_of(task: asyncio.Future[GenerateResult]) -> dict[str, str]:
    """X-Cache for a stream, known before it starts only when the result already is (a hit)."""
    if task.done() and task.exception() is None:
        return cache_header(task.result())
    return {}
