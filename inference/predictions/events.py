"""A prediction's progress as server-sent events, the way Replicate streams a prediction.

Event types are the ones the replicate client decodes (``replicate.stream.ServerSentEvent``):
``logs`` (one per log line, so a sampler's progress arrives step by step), ``output`` (one per
output file), ``error`` (the failure's message) and ``done`` (``{}``, or
``{"reason": "canceled"}`` / ``{"reason": "error"}``). Every event has an ``id``, which the
client requires. The stream follows the store's ``wait``, so it works the same over the
in-process store and the Modal one; a comment line every ``HEARTBEAT_S`` keeps proxies from
closing an idle stream. An ``output`` event's data: URI is streamed from the record's bytes
(``bodies.uri_slices``), so a stream never holds a copy of the outputs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from inference.predictions.bodies import uri_slices
from inference.predictions.envelopes import output_value
from inference.predictions.record import Prediction

if TYPE_CHECKING:
    from inference.predictions.store import PredictionStore

HEARTBEAT_S = 15.0


def encode(event: str, data: str, event_id: int) -> str:
    """One event in the text/event-stream format (multi-line data as several data lines)."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {event}\nid: {event_id}\n{lines}\n"


async def stream(
    store: PredictionStore, prediction_id: str, heartbeat_s: float = HEARTBEAT_S
) -> AsyncIterator[str | bytes]:
    """The events of one prediction from now to its end (logs so far are sent first)."""
    sent_chars, revision, event_id = 0, -1, 0
    while True:
        prediction = await store.wait(prediction_id, heartbeat_s, after_revision=revision)
        if prediction is None:  # evicted while streaming
            event_id += 1
            yield encode("error", json.dumps({"detail": "prediction not found"}), event_id)
            return
        if prediction.revision == revision and not prediction.done:
            yield ": keep-alive\n\n"
            continue
        revision = prediction.revision
        logs = prediction.logs
        fresh = logs[sent_chars:] if len(logs) >= sent_chars else logs
        sent_chars = len(logs)
        for line in fresh.splitlines():
            event_id += 1
            yield encode("logs", line, event_id)
        if not prediction.done:
            continue
        for piece in _output_events(prediction, event_id):
            yield piece
        event_id += len(prediction.outputs or ())
        events: list[tuple[str, str]] = []
        if prediction.status == "failed":
            events += [
                ("error", json.dumps({"detail": prediction.error})),
                ("done", json.dumps({"reason": "error"})),
            ]
        elif prediction.status == "canceled":
            events.append(("done", json.dumps({"reason": "canceled"})))
        else:
            events.append(("done", "{}"))
        for event, data in events:
            event_id += 1
            yield encode(event, data, event_id)
        return


def _output_events(prediction: Prediction, last_id: int) -> Iterator[str | bytes]:
    """An ``output`` event per output, ids after ``last_id``: a URL in one piece, a data: URI
    in slices of the record's bytes between ``encode``'s framing (a URI is one data line)."""
    urls = output_value(prediction) if prediction.output_urls else None
    for i, output in enumerate(prediction.outputs or (), start=1):
        if urls is not None:
            yield encode("output", urls[i - 1], last_id + i)
            continue
        yield f"event: output\nid: {last_id + i}\ndata: "
        yield from uri_slices(output)
        yield "\n\n"
