"""Replicate's HTTP API, the subset its official client uses, over the prediction store.

``replicate.Client(api_token=..., base_url=<this server>)`` works unchanged: ``run`` (file
inputs uploaded first through ``files``), ``predictions.create/get/cancel/list``,
``models.predictions.create``, ``stream``; a ``Cancel-After`` header sets a deadline. With a
registry (MODELS_FILE) ``owner/name`` selects the model ``name`` (the owner is ignored: one
server, one owner) and a version pins one of its versions: ``name@version``, or a version name
that only one model has (the client sends ``owner/name:version``'s version alone); without one,
any ``owner/name`` and version map to the one model this server serves. Errors are Replicate's
problem details (``{"title", "detail", "status"}``, plus ``invalid_fields`` on 422), which the
client raises as ``ReplicateError``.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import Field, StrictBool
from starlette.exceptions import HTTPException as StarletteHTTPException

from inference.errors import InvalidRequest
from inference.fleet import Fleet
from inference.http.deps import PROTECTED, FleetDep, SettingsDep, session_key
from inference.http.openapi import IMAGE_FILE, event_stream
from inference.http.protocols.catalog import (
    replicate_model,
    served_version_id,
    version_ids,
    version_object,
)
from inference.http.protocols.predictions import (
    PredictionBody,
    StoreDep,
    base_url,
    check_webhook,
    new_prediction,
    to_job,
)
from inference.http.protocols.replicate.deadlines import cancel_after_s, cancel_at_deadline
from inference.http.protocols.replicate.errors import ERRORS
from inference.http.protocols.replicate.file_store import get_file_store, resolve
from inference.http.shared_body import shared_file, shared_json
from inference.predictions import Prediction, new_id
from inference.predictions.bodies import keep_input_json, unwritable
from inference.predictions.envelopes import (
    CANCEL_PATH,
    OUTPUT_PATH,
    PREDICTION_PATH,
    PREFIX,
    STREAM_PATH,
    replicate_object,
)
from inference.predictions.events import stream
from inference.predictions.record import CURSOR
from inference.registry import UnknownModel, VersionRef
from inference.registry.problems import listed

PAGE_SIZE = 100
#: The Cog release whose envelopes these routes follow (tests run coglet 0.23.1 beside them).
_WAIT_WORD = "[Ww][Aa][Ii][Tt]"
_NOT_WAIT = f"\\s*(?!\\s|{_WAIT_WORD})[^,;]*(?:;[^,]*)?"
_WAIT = f"\\s*{_WAIT_WORD}(?: *= *0*(?:[1-9]|[1-5][0-9]|60))?\\s*(?:;[^,]*)?"
#: Replicate's Prefer header: preferences this server does not know are ignored (RFC 7240);
#: the first ``wait`` must be ``wait`` or ``wait=N`` (1-60). The document carries this pattern.
PREFER = re.compile(f"^(?:{_NOT_WAIT},)*(?:{_WAIT}(?:,.*)?|{_NOT_WAIT})$", re.DOTALL)


router = APIRouter(
    prefix=PREFIX,
    tags=["replicate"],
    dependencies=PROTECTED,
    route_class=ERRORS.route_class,
    responses=ERRORS.responses(401, 413, 429),
)
#: What creating a prediction can answer besides 201 (the input, a full queue, no model).
CREATE_ERRORS = ERRORS.responses(422, 503)
NOT_FOUND = ERRORS.responses(404)


class CreatePrediction(PredictionBody):
    """The body the replicate client sends; other keys are ignored, as Replicate does."""

    version: str | None = Field(
        None,
        description="The version to run: name@version, or a version name one model has; "
        "without a registry any version maps to the served model.",
    )
    webhook_completed: str | None = Field(None, description="Legacy: webhook for completed.")
    stream: StrictBool | None = Field(None, description="Accepted; every prediction can stream.")


def wait_seconds(prefer: str | None, limit_s: float) -> float | None:
    """``Prefer: wait`` (up to ``limit_s``) or ``wait=N`` (1 to 60), else None. ``PREFER``
    decides what is valid, so the document states exactly what this accepts."""
    if prefer is None:
        return None
    if not PREFER.match(prefer):
        raise InvalidRequest(
            "Prefer",
            f"Prefer must be 'wait' or 'wait=N' with N from 1 to 60 seconds, got {prefer[:100]!r}",
        )
    for preference in prefer.split(","):
        token = preference.split(";")[0].strip().lower()
        if token.startswith("wait"):
            return min(limit_s, float(token.partition("=")[2] or limit_s))
    return None


def pinned(fleet: Fleet, version: str | None) -> str | None:
    """The registry pin (``name@version``) of a Replicate version id, None for the default
    model; ``UnknownModel`` listing the versions when no version has that id."""
    if version is None or fleet.registry.implicit or "@" in version:
        return None if fleet.registry.implicit else version
    refs = [v.ref for spec in fleet.registry.models.values() for v in spec.versions]
    named = [ref for ref in refs if ref.version == version]
    if len(named) == 1:
        return str(named[0])
    ids = [str(ref) for ref in refs]
    which = "several models have" if named else "no model has"
    raise UnknownModel(
        f"{which} version {version!r}; name it as model@version, one of {listed(ids)}", ids
    )


Prefer = Annotated[str | None, Header(description="'wait' or 'wait=N' (seconds) to block.")]
CancelAfter = Annotated[
    str | None,
    Header(
        alias="Cancel-After",
        description="Cancel the prediction if it is still running this long after creation: "
        "'30s', '5m', '1h30m' (units h, m, s, ms) or seconds; at most 24h.",
    ),
]


class Creation:
    """What both create routes take besides the body and the model; builds the prediction."""

    def __init__(
        self,
        request: Request,
        fleet: FleetDep,
        settings: SettingsDep,
        store: StoreDep,
        prefer: Prefer = None,
        cancel_after: CancelAfter = None,
    ) -> None:
        self.request, self.fleet, self.settings, self.store = request, fleet, settings, store
        self.prefer, self.cancel_after = prefer, cancel_after

    async def __call__(self, body: CreatePrediction, model: str, choice: str | None) -> Response:
        """Create a prediction of ``model`` on the version ``choice`` pins (None: default)."""
        request, fleet, settings, store = self.request, self.fleet, self.settings, self.store
        if (where := unwritable(body.input)) is not None:
            raise InvalidRequest(
                where,
                f"{where} is NaN, an infinity or a lone surrogate, which JSON cannot carry "
                "(every answer echoes the input); send a finite number or valid text",
            )
        wait = wait_seconds(self.prefer, settings.predictions_wait_max_s)
        deadline_s = cancel_after_s(self.cancel_after)
        webhook, events = body.webhook, body.webhook_events_filter
        if webhook is None and body.webhook_completed is not None:
            webhook, events = body.webhook_completed, ["completed"]
        await check_webhook(body.webhook, settings)
        await check_webhook(body.webhook_completed, settings, "webhook_completed")
        base = base_url(request, settings)
        given = resolve(body.input, base, get_file_store(request))
        async with fleet.serving(choice, session_key(request)) as routed:
            job, unknown = await to_job(routed.service, given)
        prediction = new_prediction(
            "replicate",
            body.input,
            unknown,
            base,
            settings,
            webhook,
            events,
            id=new_id(),
            model=model,
            version=_version_id(fleet, routed.ref, body.version),
        )
        await keep_input_json(prediction)
        run = None if routed.ref == fleet.default_ref else fleet.runner(routed.ref)
        prediction = await store.create(prediction, job, run)
        if deadline_s is not None and not prediction.done:
            cancel_at_deadline(request.app, store, prediction.id, deadline_s)
        if wait is not None:
            prediction = await store.wait(prediction.id, wait) or prediction
            if not prediction.done:
                # Replicate's blocking API reports "starting" when the wait runs out, and the
                # official client's run() polls only on that status.
                prediction.status = "starting"
        return answer(prediction, status_code=201)


def answer(prediction: Prediction, status_code: int = 200) -> Response:
    """The prediction object, its outputs and a large input streamed from the record."""
    return shared_json(
        lambda mark: replicate_object(prediction, uri=mark, text=mark), status_code=status_code
    )


def _version_id(fleet: Fleet, ref: VersionRef, given: str | None) -> str:
    """The prediction's ``version``: the registry version that serves it (``name@version``);
    without a registry, the version the client gave or the served model's id, as before."""
    if fleet.registry.implicit:
        return given or served_version_id(fleet.default)
    return str(ref)


CreationDep = Annotated[Creation, Depends()]


@router.post("/predictions", status_code=201, responses=CREATE_ERRORS)
async def create_prediction(body: CreatePrediction, create: CreationDep) -> Response:
    """Create a prediction of a version (without a registry any version maps to the served
    model)."""
    fleet = create.fleet
    choice = pinned(fleet, body.version)
    if fleet.registry.implicit:
        name = fleet.default.model.name
    else:
        name = choice.partition("@")[0] if choice else fleet.default_ref.model
    return await create(body, name if "/" in name else f"local/{name}", choice)


@router.post("/models/{owner}/{name}/predictions", status_code=201, responses=CREATE_ERRORS)
@router.post("/deployments/{owner}/{name}/predictions", status_code=201, include_in_schema=False)
async def create_model_prediction(
    owner: str, name: str, body: CreatePrediction, create: CreationDep
) -> Response:
    """Create a prediction of ``owner/name``: the registry's model ``name`` (without a
    registry any name maps to the served model)."""
    choice = None if create.fleet.registry.implicit else name
    return await create(body, f"{owner}/{name}", choice)


@router.get("/models/{owner}/{name}", responses=NOT_FOUND)
async def get_model(owner: str, name: str, fleet: FleetDep) -> dict[str, Any]:
    """The model ``name`` as ``client.models.get`` reads it, its latest version the one most
    of its traffic reaches (without a registry any name is the served model)."""
    return replicate_model(fleet, owner, name)


@router.get("/models/{owner}/{name}/versions", responses=NOT_FOUND)
async def list_versions(owner: str, name: str, fleet: FleetDep) -> dict[str, Any]:
    """The model's versions as ``model.versions.list()`` reads them; each id pins it."""
    return {
        "next": None,
        "previous": None,
        "results": [version_object(v) for v in version_ids(fleet, name)],
    }


@router.get("/models/{owner}/{name}/versions/{version_id}")
async def get_version(owner: str, name: str, version_id: str) -> dict[str, Any]:
    """Any version is the served model: its input and output schema (``run`` reads them for
    an ``owner/name:version`` reference)."""
    return version_object(version_id)


async def _found(store: StoreDep, prediction_id: str) -> Prediction:
    prediction = await store.get(prediction_id)
    if prediction is None:
        raise StarletteHTTPException(404, f"prediction {prediction_id!r} not found")
    return prediction


@router.get(PREDICTION_PATH, responses=NOT_FOUND)
async def get_prediction(prediction_id: str, store: StoreDep) -> Response:
    """The prediction now."""
    return answer(await _found(store, prediction_id))


@router.post(CANCEL_PATH, responses=NOT_FOUND)
async def cancel_prediction(prediction_id: str, store: StoreDep) -> Response:
    """Cancel it if it is still running; a finished one is returned as it is."""
    prediction = await store.cancel(prediction_id)
    if prediction is None:
        raise StarletteHTTPException(404, f"prediction {prediction_id!r} not found")
    return answer(prediction)


def _cursor(prediction: Prediction) -> str:
    """``<created_at>_<id>``: the creation time in plain decimals (exact), then the id."""
    return f"{Decimal(repr(prediction.created_at)):f}_{prediction.id}"


def _before(cursor: str | None) -> tuple[float, str] | None:
    if cursor is None:
        return None
    if not CURSOR.match(cursor):
        raise InvalidRequest("cursor", f"cursor is not one this server gave, got {cursor!r}")
    created, _, prediction_id = cursor.partition("_")
    return float(created), prediction_id


@router.get("/predictions", responses=ERRORS.responses(422))
async def list_predictions(
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    cursor: str | None = Query(None, description="From `next`; http.openapi writes its pattern."),
) -> Response:
    """Newest first, ``PAGE_SIZE`` a page; output and logs are left out (GET one for them)."""
    page = await store.list(_before(cursor), PAGE_SIZE + 1)
    following = None
    if len(page) > PAGE_SIZE:
        page = page[:PAGE_SIZE]
        following = f"{base_url(request, settings)}/v1/predictions?cursor={_cursor(page[-1])}"
    return shared_json(
        lambda mark: {
            "previous": None,
            "next": following,
            "results": [replicate_object(p, summary=True, text=mark) for p in page],
        }
    )


@router.get(
    STREAM_PATH,
    response_class=StreamingResponse,
    responses={
        **event_stream("logs", "output", "error", "done", ids=True),
        **NOT_FOUND,
    },
)
async def stream_prediction(prediction_id: str, store: StoreDep) -> StreamingResponse:
    """Server-sent events: logs (a line per step), outputs, then done."""
    await _found(store, prediction_id)
    return StreamingResponse(
        stream(store, prediction_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get(
    OUTPUT_PATH,
    response_class=Response,
    responses={
        200: IMAGE_FILE,
        **NOT_FOUND,
    },
)
async def prediction_output(prediction_id: str, name: str, store: StoreDep) -> Response:
    """One output file (``PREDICTIONS_OUTPUT=url``)."""
    prediction = await _found(store, prediction_id)
    for output in prediction.outputs or ():
        if output.name == name:
            return shared_file(output.data, output.media_type)
    raise StarletteHTTPException(404, f"prediction {prediction_id!r} has no output {name!r}")
