"""Cog's HTTP API (what every Cog container serves) over the prediction store.

The routes and envelopes of Cog's own prediction server (coglet 0.23, which
tests/test_predictions_cog.py runs side by side with this one): ``POST /predictions``
(synchronous unless ``Prefer: respond-async``, then 202 ``{id, status}``),
``PUT /predictions/{id}`` (idempotent: an id already known returns that prediction),
``POST /predictions/{id}/cancel``, ``GET /health-check``. Where this server differs, it
says more than Cog: ``GET /predictions/{id}`` exists (Cog answers 405), input errors are all
422 at creation (Cog fails the prediction for rules its schema cannot express), finished
predictions are kept for ``PREDICTIONS_TTL_S`` (so a cancel or a PUT finds them; Cog forgets
them), and a cancel answers the envelope (Cog answers ``{}``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from inference.errors import InferenceError, InvalidRequest
from inference.http.deps import PROTECTED, ServiceDep, SettingsDep
from inference.http.protocols.cog.errors import ERRORS
from inference.http.protocols.predictions import (
    PredictionBody,
    StoreDep,
    base_url,
    check_webhook,
    new_prediction,
    to_job,
)
from inference.http.shared_body import shared_json
from inference.predictions import Prediction, new_id
from inference.predictions.envelopes import cog_accepted, cog_envelope
from inference.predictions.record import ID_PATTERN
from inference.predictions.store import PredictionStore

#: A synchronous request waits this long between checks of its prediction (it is woken at the
#: end anyway; the bound only keeps one wait from outliving a store that was replaced).
SYNC_WAIT_S = 3600.0


router = APIRouter(tags=["cog"], route_class=ERRORS.route_class)
predictions = APIRouter(
    dependencies=PROTECTED,
    route_class=ERRORS.route_class,
    responses=ERRORS.responses(401, 413, 429),
)
#: Creating a prediction: 200 when it is done, 202 at once with ``Prefer: respond-async``.
CREATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "Accepted (Prefer: respond-async): `{id, status}`; it runs on.",
        "content": {"application/json": {"schema": {"type": "object"}}},
    },
    **ERRORS.responses(422, 503),
}
NOT_FOUND = ERRORS.responses(404)


class PredictionRequest(PredictionBody):
    """Cog's request body; other keys (``context``, ``output_file_prefix``) are ignored."""

    id: str | None = Field(None, description="The prediction's id (default: a random one).")


Prefer = Annotated[str | None, Header(description="'respond-async' answers 202 at once.")]


def _respond_async(prefer: str | None) -> bool:
    return any(
        p.split(";")[0].strip().lower() == "respond-async" for p in (prefer or "").split(",")
    )


async def _answer(store: PredictionStore, prediction: Prediction, prefer: str | None) -> Response:
    if _respond_async(prefer):
        return JSONResponse(cog_accepted(prediction), status_code=202)
    while not prediction.done:
        waited = await store.wait(prediction.id, SYNC_WAIT_S)
        if waited is None:  # gone from the store (another container's): never spin on it
            raise InferenceError(f"prediction {prediction.id!r} is no longer kept; create it again")
        prediction = waited
    return _envelope(prediction, prediction.id)


def _envelope(prediction: Prediction | None, prediction_id: str) -> Response:
    """Cog's envelope, its outputs streamed from the record; 404 for a prediction not kept."""
    if prediction is None:
        raise StarletteHTTPException(404, f"prediction {prediction_id!r} not found")
    return shared_json(lambda uri: cog_envelope(prediction, uri=uri))


class Creation:
    """What both create routes take besides the body and the id; builds the prediction."""

    def __init__(
        self,
        request: Request,
        service: ServiceDep,
        settings: SettingsDep,
        store: StoreDep,
        prefer: Prefer = None,
    ) -> None:
        self.request, self.service, self.settings, self.store = request, service, settings, store
        self.prefer = prefer

    async def __call__(self, body: PredictionRequest, prediction_id: str) -> Response:
        # The request is checked first: an id already known answers its prediction only for a
        # request that could have created it.
        settings, store = self.settings, self.store
        await check_webhook(body.webhook, settings)
        job, unknown = await to_job(self.service, body.input)
        if (existing := await store.get(prediction_id)) is not None:
            return await _answer(store, existing, self.prefer)
        prediction = new_prediction(
            "cog",
            body.input,
            unknown,
            base_url(self.request, settings),
            settings,
            body.webhook,
            body.webhook_events_filter,
            id=prediction_id,
        )
        return await _answer(store, await store.create(prediction, job), self.prefer)


CreationDep = Annotated[Creation, Depends()]


def _checked_id(prediction_id: str) -> str:
    if not ID_PATTERN.match(prediction_id):
        raise InvalidRequest(
            "id",
            "id must be 1 to 128 letters, digits, '_', '.' or '-' (starting with a letter or "
            f"digit), got {prediction_id[:140]!r}",
        )
    return prediction_id


@predictions.post("/predictions", responses=CREATE_RESPONSES)
async def create_prediction(body: PredictionRequest, create: CreationDep) -> Response:
    """Run a prediction; with ``Prefer: respond-async``, answer 202 and run it in the background."""
    return await create(body, _checked_id(body.id) if body.id is not None else new_id())


@predictions.put("/predictions/{prediction_id}", responses=CREATE_RESPONSES)
async def put_prediction(
    prediction_id: str, body: PredictionRequest, create: CreationDep
) -> Response:
    """Create a prediction under this id, or answer the one that already has it."""
    if body.id is not None and body.id != prediction_id:
        raise InvalidRequest("id", "prediction ID must match the ID supplied in the URL")
    return await create(body, _checked_id(prediction_id))


@predictions.get("/predictions/{prediction_id}", responses=NOT_FOUND)
async def get_prediction(prediction_id: str, store: StoreDep) -> Response:
    """The prediction now (an addition: Cog's own server has no such route)."""
    return _envelope(await store.get(prediction_id), prediction_id)


@predictions.post("/predictions/{prediction_id}/cancel", responses=NOT_FOUND)
async def cancel_prediction(prediction_id: str, store: StoreDep) -> Response:
    """Cancel it if it is still running; a finished one is returned as it is."""
    return _envelope(await store.cancel(prediction_id), prediction_id)


@router.get("/health-check")
async def health_check(service: ServiceDep) -> dict[str, Any]:
    """Cog's health: STARTING, READY, BUSY (the queue is full), SETUP_FAILED, DEFUNCT."""
    phase = service.engine.phase
    if phase == "ready":
        full = service.engine.queue_depth >= service.settings.max_queue_size
        status = "BUSY" if full else "READY"
    else:
        status = {"failed": "SETUP_FAILED", "stopped": "DEFUNCT"}.get(phase, "STARTING")
    setup = {"ready": "succeeded", "failed": "failed"}.get(phase, "starting")
    return {"status": status, "setup": {"status": setup, "logs": service.engine.load_error or ""}}


router.include_router(predictions)
