"""The native inference routes: POST /predict and POST /predict/batch."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from inference import codec
from inference.errors import InferenceError, InvalidRequest
from inference.fleet import Fleet
from inference.http.bodies import BoundedBodyRoute
from inference.http.deps import (
    PROTECTED,
    VERSION_HEADER,
    FleetDep,
    SettingsDep,
    session_key,
    until_disconnect,
)
from inference.http.forms import openapi_body, read_request
from inference.http.lean import LeanRoute
from inference.http.openapi import IMAGE_FILE, error_responses
from inference.results import BatchItem, BatchItemError, BatchRequest, BatchResponse, GenerateResult
from inference.schema import RoutedRequest

log = logging.getLogger(__name__)

router = APIRouter(tags=["inference"], dependencies=PROTECTED, route_class=BoundedBodyRoute)


def preferred_image_format(accept: str) -> str | None:
    """'png'/'jpeg'/'webp' (or '*' for image/*) when Accept prefers an image over JSON."""
    best, best_q = None, 0.0
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if q > best_q:
            best, best_q = media.lower(), q
    if best == "image/*":
        return "*"
    if best and best.startswith("image/") and best not in codec.BY_MEDIA_TYPE:
        raise StarletteHTTPException(
            406,
            f"Accept asks for {best}; this server answers with "
            f"{', '.join(sorted(codec.BY_MEDIA_TYPE))} or application/json",
        )
    spec = codec.BY_MEDIA_TYPE.get(best or "")
    return spec.name if spec else None


ERRORS = (401, 404, 413, 422, 429, 500, 503, 504)


def result_json(result: GenerateResult) -> bytes:
    """``result`` as the JSON FastAPI would write, in one pass and a fraction of the time.

    FastAPI's path (pydantic's dump, then ``json.dumps`` over a megabyte of base64, then UTF-8)
    copies each image's text three times; pybase64 and orjson write it once: about 0.07 ms
    instead of 1.1 ms for a 512x512 PNG (BENCHMARKS.md). A test keeps the two byte-for-byte equal.
    """
    import orjson
    import pybase64

    images = [
        {"data": pybase64.b64encode_as_string(image.data), **image.model_dump(exclude={"data"})}
        for image in result.images
    ]
    return orjson.dumps({"images": images, **result.model_dump(exclude={"images"})})


async def predict(
    body: Annotated[RoutedRequest, Depends(read_request)],
    request: Request,
    fleet: FleetDep,
) -> Response:
    """Generate images (JSON or multipart body): JSON with base64 images, or raw image bytes
    for Accept: image/*."""
    fmt = preferred_image_format(request.headers.get("accept", ""))
    if fmt not in (None, "*", body.output_format):
        if "output_format" in body.model_fields_set:
            raise InvalidRequest(
                "output_format",
                f"Accept asks for image/{fmt} but output_format is {body.output_format!r}; "
                "drop one of them",
            )
        body = body.model_copy(update={"output_format": fmt})
    if fmt is not None and body.num_outputs > 1:
        raise InvalidRequest(
            "num_outputs",
            f"Accept: image/* returns one image, but num_outputs is {body.num_outputs}; "
            "accept application/json for several, or ask for one",
        )
    async with fleet.serving(body.model, session_key(request)) as routed:
        result = await until_disconnect(request, routed.service.submit(body))
    result = result.model_copy(update={"version": str(routed.ref)})
    headers = {VERSION_HEADER: str(routed.ref)}
    if result.cache:  # only a request with a seed
        headers["X-Cache"] = result.cache
    if fmt is None:
        return Response(result_json(result), media_type="application/json", headers=headers)
    image, timings = result.images[0], result.timings
    flagged = {} if image.nsfw is None else {"X-NSFW": str(image.nsfw).lower()}
    return Response(
        image.data,
        media_type=image.media_type,
        headers={
            **headers,
            **flagged,
            "X-Seed": str(image.seed),
            "X-Model": result.model,
            "X-Batch-Size": str(result.batch_size),
            "Server-Timing": (
                f"queue;dur={timings.queue_ms:.1f}, inference;dur={timings.inference_ms:.1f}, "
                f"encode;dur={timings.encode_ms:.1f}"
            ),
        },
    )


# The hottest path: served by a prebuilt plan of the same dependencies (``LeanRoute``).
router.add_api_route(
    "/predict",
    predict,
    methods=["POST"],
    response_model=GenerateResult,
    responses={200: IMAGE_FILE, **error_responses(406, *ERRORS)},
    openapi_extra=openapi_body(),
    route_class_override=LeanRoute,
)


def _batch_item(outcome: GenerateResult | BaseException) -> BatchItem:
    if isinstance(outcome, GenerateResult):
        return BatchItem(result=outcome)
    if isinstance(outcome, InferenceError):
        field = outcome.field if isinstance(outcome, InvalidRequest) else None
        return BatchItem(
            error=BatchItemError(type=outcome.code, message=outcome.message, field=field)
        )
    log.error("unexpected error in a batch item", exc_info=outcome)
    message = "internal server error; see the server log"
    return BatchItem(error=BatchItemError(type="internal_error", message=message))


@router.post("/predict/batch", responses=error_responses(*ERRORS))
async def predict_batch(
    body: BatchRequest, request: Request, fleet: FleetDep, settings: SettingsDep
) -> BatchResponse:
    """Serve several requests at once (they share batches); results in request order."""
    if len(body.requests) > settings.max_batch_requests:
        raise InvalidRequest(
            "requests",
            f"requests must hold at most {settings.max_batch_requests} items on this server "
            f"(MAX_BATCH_REQUESTS), got {len(body.requests)}",
        )
    sticky = session_key(request)
    outcomes = await until_disconnect(
        request,
        asyncio.gather(*(_serve(fleet, r, sticky) for r in body.requests), return_exceptions=True),
    )
    return BatchResponse(results=[_batch_item(outcome) for outcome in outcomes])


async def _serve(fleet: Fleet, item: dict[str, Any], sticky: str | None) -> GenerateResult:
    """One batch item on the version its ``model`` names (an item's own error if unknown)."""
    model = item.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest("model", f"model must be a string, got {model!r}")
    request = {key: value for key, value in item.items() if key != "model"}
    async with fleet.serving(model, sticky) as routed:
        result = await routed.service.submit(request)
    return result.model_copy(update={"version": str(routed.ref)})
