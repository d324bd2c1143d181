"""What the engine does with what a model hands back: checks it (a backend that returns the
wrong number or shape of images fails loudly), fans a batch's step previews out to the callers
that asked for them, and calls listeners so that one that fails never fails a batch."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from inference.engine.batcher import Ticket
from inference.errors import ModelError
from inference.models.base import ModelImage, PreviewCallback, RenderPreview
from inference.schema import Job

log = logging.getLogger(__name__)


def batch_preview(live: list[Ticket]) -> PreviewCallback | None:
    """The model's preview hook for a batch: None unless one of its callers asked for previews.

    Each step's render runs at most once, however many callers look at it.
    """
    if all(t.preview is None for t in live):
        return None

    def preview(step: int, total: int, render: RenderPreview) -> None:
        rendered: list[list[list[np.ndarray]]] = []

        def images_of(index: int) -> Callable[[], list[np.ndarray]]:
            def images() -> list[np.ndarray]:
                if not rendered:
                    rendered.append(render())
                return rendered[0][index]

            return images

        for index, ticket in enumerate(live):
            if ticket.preview is not None and not ticket.abandoned:
                notify([ticket.preview], step, total, images_of(index))

    return preview


Checked = list[tuple[list[np.ndarray], list[bool | None]]]


def checked(jobs: list[Job], outputs: list[list[Any]]) -> Checked:
    """Each job's pixels and safety flags; a backend that returns the wrong number or shape of
    images fails loudly."""
    if len(outputs) != len(jobs):
        raise ModelError(f"the model returned {len(outputs)} results for {len(jobs)} requests")
    checked: Checked = []
    for job, images in zip(jobs, outputs, strict=True):
        if len(images) != job.num_outputs:
            raise ModelError(
                f"the model returned {len(images)} images for a request of {job.num_outputs}"
            )
        items = [i if isinstance(i, ModelImage) else ModelImage(i) for i in images]
        for item in items:
            pixels = item.pixels
            if (
                not isinstance(pixels, np.ndarray)
                or pixels.shape != (job.height, job.width, 3)
                or pixels.dtype != np.uint8
            ):
                got = f"{pixels.dtype} {pixels.shape}" if isinstance(pixels, np.ndarray) else ""
                raise ModelError(
                    f"the model returned an image of {got or type(pixels).__name__}, "
                    f"expected uint8 {(job.height, job.width, 3)}"
                )
        checked.append(([i.pixels for i in items], [i.nsfw for i in items]))
    return checked


def notify(listeners: list[Callable[..., None]], *args: Any) -> None:
    """Call each listener; one that fails (metrics, logs) is logged and never fails a batch."""
    for listener in listeners:
        try:
            listener(*args)
        except Exception:
            log.exception("listener %r failed", listener)
