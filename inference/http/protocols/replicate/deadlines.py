"""Replicate's ``Cancel-After`` header: a prediction still running at its deadline is canceled.

Replicate's 2.0 SDK sends it for ``cancel_after=``; the value is a duration such as ``30s``,
``5m``, ``1h30m`` or ``1.5s`` (units ``h``, ``m``, ``s``, ``ms``, combinable), or bare seconds
(``45``). The deadline counts from creation. At the deadline the prediction is canceled as
``POST /v1/predictions/{id}/cancel`` cancels it (status ``canceled``, the same webhooks);
one that has finished is left as it is. Replicate also reports ``aborted`` for a prediction
that never started; this server starts predictions at once, so it always says ``canceled``.

The timer lives in this process: a server that stops before the deadline takes its timers
with it (its in-process predictions fail at shutdown anyway; a Modal store's prediction then
runs to its end).
"""

from __future__ import annotations

import asyncio
import logging
import re

from fastapi import FastAPI

from inference.errors import InvalidRequest
from inference.predictions import PredictionStore

log = logging.getLogger(__name__)

#: Seconds in each unit a ``Cancel-After`` duration may use.
UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_AMOUNT = r"\d{1,9}(?:\.\d{1,9})?"
_PART = re.compile(f"({_AMOUNT})(ms|h|m|s)")
DURATION = re.compile(f"^(?:{_AMOUNT}|(?:{_AMOUNT}(?:ms|h|m|s))+)$")
#: The longest deadline accepted: a prediction outlives its store's TTL well before this.
MAX_CANCEL_AFTER_S = 24 * 3600.0
HOW = "a duration such as '30s', '5m' or '1h30m' (units h, m, s, ms), or seconds ('45')"


def cancel_after_s(value: str | None) -> float | None:
    """The ``Cancel-After`` header in seconds, None without one; a 422 naming the header for a
    value that is no duration, zero, or longer than a day."""
    if value is None:
        return None
    text = value.strip()
    if not DURATION.match(text):
        raise InvalidRequest("Cancel-After", f"Cancel-After must be {HOW}, got {value[:100]!r}")
    parts = _PART.findall(text)
    seconds = sum(float(n) * UNIT_S[u] for n, u in parts) if parts else float(text)
    if not 0 < seconds <= MAX_CANCEL_AFTER_S:
        raise InvalidRequest(
            "Cancel-After",
            f"Cancel-After must be more than 0 and at most 24h, got {value[:100]!r}",
        )
    return seconds


def cancel_at_deadline(
    app: FastAPI, store: PredictionStore, prediction_id: str, after_s: float
) -> None:
    """Cancel the prediction ``after_s`` from now unless it has finished by then. The app's
    state keeps the timer (a task nobody holds may be collected before it fires); the timer
    ends as soon as the prediction does, so a day-long deadline holds nothing for a day."""
    timers: set[asyncio.Task[None]] | None = getattr(app.state, "cancel_timers", None)
    if timers is None:
        timers = app.state.cancel_timers = set()

    async def cancel_later() -> None:
        waited = await store.wait(prediction_id, after_s)
        if waited is None or waited.done:
            return
        prediction = await store.cancel(prediction_id)
        if prediction is not None and prediction.status == "canceled":
            log.info("prediction %s canceled at its Cancel-After deadline", prediction_id)

    timer = asyncio.create_task(cancel_later(), name=f"cancel-after-{prediction_id}")
    timers.add(timer)
    timer.add_done_callback(timers.discard)
