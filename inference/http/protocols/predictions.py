"""What the two predictions protocols (``protocols/replicate``, ``protocols/cog``) share.

The store's lifecycle (created at start-up unless a runtime installed its own with
``use_store``, closed at shutdown so unfinished predictions fail with a clear error and their
webhooks go out; both protocols declare this one lifespan, which the app runs once), the input
translation, and what both create bodies say in the OpenAPI document.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from inference.errors import InvalidRequest, NotReady
from inference.http.errors import unparsable_body
from inference.predictions import EVENTS, Prediction, PredictionStore
from inference.predictions.record import ID_PATTERN, Event, Protocol
from inference.predictions.store import LocalStore
from inference.predictions.webhooks import check_target
from inference.schema import GenerateRequest, Job
from inference.service import Service
from inference.settings import Settings


class PredictionBody(BaseModel):
    """What both protocols' create bodies hold; other keys are ignored, as both servers do."""

    model_config = ConfigDict(extra="ignore")

    input: dict[str, Any] = Field(default_factory=dict, description="The model's inputs.")
    webhook: str | None = Field(None, description="A URL to POST the prediction to.")
    webhook_events_filter: list[Event] | None = Field(
        None, description="Which events call the webhook (default: all)."
    )


def use_store(app: FastAPI, store: PredictionStore) -> None:
    """Serve predictions from ``store`` (a runtime's own, e.g. Modal's) instead of memory."""
    app.state.prediction_store = store


def get_store(request: Request) -> PredictionStore:
    """The app's store; created on first use when the app runs without its lifespan."""
    state = request.app.state
    if getattr(state, "prediction_store", None) is None:
        use_store(request.app, LocalStore(state.service, state.settings))
    return state.prediction_store


StoreDep = Annotated[PredictionStore, Depends(get_store)]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """An installed store is kept (and closed); otherwise an in-process one lives as long as
    the app serves."""
    installed = getattr(app.state, "prediction_store", None)
    store = installed or LocalStore(app.state.service, app.state.settings)
    use_store(app, store)
    try:
        yield
    finally:
        await store.close()
        if installed is None:
            app.state.prediction_store = None


def invalid_body(exc: RequestValidationError) -> InvalidRequest:
    """Pydantic's errors on the envelope as one ``InvalidRequest`` naming the field."""
    from inference.validation import invalid_request

    return invalid_request(exc.errors())


def as_invalid_request(exc: Exception) -> Exception:
    """A body the framework could not read (its 400: not JSON, not UTF-8, nested too deep) or
    could not validate, as the ``InvalidRequest`` each protocol answers with 422; other
    exceptions as they are."""
    if isinstance(exc, RequestValidationError):
        return invalid_body(exc)
    if isinstance(exc, StarletteHTTPException) and exc.status_code == 400 and exc.__cause__:
        return InvalidRequest("body", unparsable_body(exc.__cause__))
    return exc


def base_url(request: Request, settings: Settings) -> str:
    """Where clients reach this server: PUBLIC_URL, else the request's own base."""
    return (settings.public_url or str(request.base_url)).rstrip("/")


def require_ready(service: Service) -> None:
    """Predictions are accepted once the model is loaded (defaults may come from it)."""
    if service.ready:
        return
    if service.load_error is not None:
        raise NotReady(f"the model failed to load: {service.load_error}", permanent=True)
    raise NotReady("the model is still loading; retry when GET /ready answers 200")


def to_job(service: Service, given: dict[str, Any]) -> tuple[Job, list[str]]:
    """The input as a job, and the unknown keys dropped from it (Cog and Replicate drop them
    too); an ``InvalidRequest`` names the field as ``input.<name>``."""
    require_ready(service)
    known = {k: v for k, v in given.items() if k in GenerateRequest.model_fields}
    try:
        job = service.job(known)
    except InvalidRequest as exc:
        errors = [{**e, "field": f"input.{e['field']}"} for e in exc.errors]
        raise InvalidRequest(errors[0]["field"], exc.message, errors) from None
    return job, sorted(set(given) - set(known))


async def check_webhook(url: str | None, settings: Settings, field: str = "webhook") -> None:
    """422 naming ``field`` unless it is an http(s) URL on a host this server may call."""
    if url is not None:
        await check_target(url, settings, field)


def new_prediction(
    protocol: Protocol,
    given: dict[str, Any],
    unknown: list[str],
    base: str,
    settings: Settings,
    webhook: str | None,
    events: Iterable[str] | None,
    **fields: Any,
) -> Prediction:
    """A prediction of ``protocol`` for the input ``given`` (its ``unknown`` keys noted in its
    logs), calling ``webhook`` for ``events`` (default: all), with its protocol's ``fields``."""
    prediction = Prediction(
        protocol=protocol,
        input=given,
        base_url=base,
        output_urls=settings.predictions_output == "url",
        webhook=webhook,
        events=frozenset(events if events is not None else EVENTS),
        **fields,
    )
    if unknown:
        prediction.log(f"ignored inputs this model does not have: {', '.join(unknown)}")
    return prediction


#: An ``http(s)://`` URL, as the webhook check wants one (whether its host may be called is
#: this server's policy, checked when the prediction is created).
WEBHOOK_URL = {"type": "string", "format": "uri", "pattern": "^https?://[^\\s/?#]+"}


def document_body(schemas: dict[str, Any], name: str) -> None:
    """Write what the create body ``name`` accepts, which its loose types do not say: the
    model's inputs as ``PredictionInput`` (GenerateRequest's fields with this server's limits),
    webhooks as URLs, a chosen id by its pattern."""
    if "PredictionInput" not in schemas:
        prediction_input = copy.deepcopy(schemas["GenerateRequest"])
        prediction_input.update(
            title="PredictionInput",
            additionalProperties=True,
            description="The model's inputs: GenerateRequest's fields (other keys are ignored).",
        )
        schemas["PredictionInput"] = prediction_input
    properties = schemas[name]["properties"]
    properties["input"] = {"$ref": "#/components/schemas/PredictionInput"}
    for key in ("webhook", "webhook_completed"):
        if key in properties:
            properties[key] = {
                "anyOf": [WEBHOOK_URL, {"type": "null"}],
                "description": properties[key].get("description", ""),
            }
    if "id" in properties:
        properties["id"]["anyOf"] = [
            {"type": "string", "pattern": ID_PATTERN.pattern},
            {"type": "null"},
        ]
