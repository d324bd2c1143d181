"""What the two predictions protocols (``routes/replicate.py``, ``routes/cog.py``) share.

The store's lifecycle (created at start-up unless a runtime installed its own with
``use_store``, closed at shutdown so unfinished predictions fail with a clear error and their
webhooks go out), the input translation, and a route class that answers errors in each
protocol's own shape instead of this app's ``{"error": ...}`` envelope.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from inference.errors import InferenceError, InvalidRequest, NotReady
from inference.http.bodies import BoundedBodyRoute
from inference.http.errors import CLIENT_GONE, INTERNAL_ERROR, log_unexpected, unparsable_body
from inference.predictions import EVENTS, Prediction, PredictionStore
from inference.predictions.record import Event, Protocol
from inference.predictions.store import LocalStore
from inference.predictions.targets import check_target
from inference.schema import GenerateRequest, Job
from inference.service import Service
from inference.settings import Settings

ErrorRenderer = Callable[[Exception], Response | None]


class PredictionBody(BaseModel):
    """What both protocols' create bodies hold; other keys are ignored, as both servers do."""

    model_config = ConfigDict(extra="ignore")

    input: dict[str, Any] = Field(default_factory=dict, description="The model's inputs.")
    webhook: str | None = Field(None, description="A URL to POST the prediction to.")
    webhook_events_filter: list[Event] | None = Field(
        None,
        max_length=len(EVENTS),
        description="Which events call the webhook (default: all).",
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


def protocol_route(render_error: ErrorRenderer) -> type[BoundedBodyRoute]:
    """A route class whose errors (body validation, auth, domain errors) ``render_error``
    shapes; what it declines goes on to the app's handlers."""

    class ProtocolRoute(BoundedBodyRoute):
        def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                try:
                    return await handler(request)
                except Exception as exc:
                    response = render_error(exc)
                    if response is not None:
                        return response
                    if isinstance(exc, CLIENT_GONE):
                        raise  # the app's handler counts it; nobody reads an answer
                    log_unexpected(request, exc)  # a 500 still in the protocol's shape
                    return render_error(InferenceError(INTERNAL_ERROR)) or Response(status_code=500)

            return handle

    return ProtocolRoute


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
        await check_target(url, settings.webhook_hosts, field=field)


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
