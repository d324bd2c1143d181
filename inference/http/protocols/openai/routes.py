"""OpenAI's images API over the same service: POST /v1/images/generations and
POST /v1/images/edits (JSON, or a stream of partial images), and GET /v1/images/files/{token}
for ``response_format=url``.

``OpenAI(base_url="http://host:port/v1", api_key=AUTH_TOKEN)`` works against it: the client's
``Authorization: Bearer`` is checked like every protected route's. The route translates the
parameters (``params``) and calls the service; validation, batching, the result cache and the
model are the service's. Every error on these paths, auth included, is answered in OpenAI's
shape (``shapes.ERRORS``).
"""

from __future__ import annotations

import logging
import time
from contextlib import AsyncExitStack
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from inference.http.deps import (
    PROTECTED,
    VERSION_HEADER,
    FleetDep,
    SettingsDep,
    session_key,
    until_disconnect,
)
from inference.http.forms import read_form
from inference.http.openapi import IMAGE_FILE, event_stream
from inference.http.protocols.catalog import model_list
from inference.http.protocols.openai.image_store import (
    ImageStore,
    OverBudget,
    get_image_store,
)
from inference.http.protocols.openai.params import (
    EditParams,
    GenerationParams,
    parse_edit,
    parse_params,
)
from inference.http.protocols.openai.shapes import ERRORS, OpenAIError
from inference.http.protocols.openai.stream import (
    EventKind,
    FinalImage,
    b64,
    cache_header,
    final_images,
    outlive,
    stream_images,
)
from inference.schema import Job
from inference.service import Service
from inference.settings import Settings

log = logging.getLogger(__name__)


router = APIRouter(prefix="/v1", tags=["openai"], route_class=ERRORS.route_class)
ImageStoreDep = Annotated[ImageStore, Depends(get_image_store)]
#: An edit's uploads: one image and a mask, and room to refuse a list of images by name.
MAX_EDIT_FILES = 16
#: Text parts: each parameter once, with room to name a repeated one.
MAX_EDIT_PARTS = 2 * len(EditParams.model_fields)


@router.post(
    "/images/generations",
    dependencies=PROTECTED,
    # The body is read and translated by hand (errors in OpenAI's shape); this documents it.
    openapi_extra={
        "requestBody": {
            "required": True,
            # schema.document writes it: the parameters with this server's limits.
            "content": {"application/json": {"schema": {}}},
        }
    },
    responses={
        **event_stream(
            "image_generation.partial_image", "image_generation.completed", "error", ids=False
        ),
        **ERRORS.responses(400, 401, 413, 429, 500, 503, 504),
    },
)
async def generations(
    request: Request, fleet: FleetDep, settings: SettingsDep, store: ImageStoreDep
) -> Response:
    """OpenAI's image generation: ImagesResponse JSON, or server-sent events with stream=true."""
    params = parse_params(await request.body())
    async with AsyncExitStack() as held:
        routed = await held.enter_async_context(
            fleet.serving(params.model, sticky(request, params))
        )
        job = await routed.service.job_async(params.native())
        response = await _answer(
            request, routed.service, settings, store, params, job, "image_generation"
        )
        outlive(response, held)
    response.headers[VERSION_HEADER] = str(routed.ref)
    return response


@router.post(
    "/images/edits",
    dependencies=PROTECTED,
    # The form is read and translated by hand (errors in OpenAI's shape); this documents it.
    openapi_extra={
        "requestBody": {
            "required": True,
            # schema.document writes it: the parameters with this server's limits.
            "content": {"multipart/form-data": {"schema": {}}},
        }
    },
    responses={
        **event_stream("image_edit.partial_image", "image_edit.completed", "error", ids=False),
        **ERRORS.responses(400, 401, 413, 429, 500, 503, 504),
    },
)
async def edits(
    request: Request, fleet: FleetDep, settings: SettingsDep, store: ImageStoreDep
) -> Response:
    """OpenAI's image edit: the image redrawn from the prompt (image-to-image) or, where the
    mask (or, without one, the image) is fully transparent, repainted (inpainting)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "multipart/form-data":
        raise OpenAIError(
            400,
            "send the image and parameters as multipart/form-data, as the openai client's "
            "images.edit does (curl -F image=@photo.png -F prompt=...)",
        )
    parts = await read_form(request, MAX_EDIT_FILES, MAX_EDIT_PARTS, settings)
    params = parse_edit(parts)
    async with AsyncExitStack() as held:
        routed = await held.enter_async_context(
            fleet.serving(params.model, sticky(request, params))
        )
        service = routed.service
        # OpenAI's mask becomes ours by reading pixels: blocking work, in the service's pool.
        job = await service.job_async(await service.run_blocking(params.native_edit, settings))
        response = await _answer(request, service, settings, store, params, job, "image_edit")
        outlive(response, held)
    response.headers[VERSION_HEADER] = str(routed.ref)
    return response


def sticky(request: Request, params: GenerationParams) -> str | None:
    """The key that keeps a client on one version of a model: OpenAI's end-user id
    (``safety_identifier``, or the deprecated ``user``), else the X-Session-Id header."""
    return params.identifier or session_key(request)


@router.get("/models", dependencies=PROTECTED, responses=ERRORS.responses(401, 429))
async def list_models(fleet: FleetDep) -> dict[str, Any]:
    """OpenAI's model list, as ``client.models.list()`` reads it: each model this server has
    (its name selects it), then each version as ``name@version`` (which pins it); the same
    body is Replicate's page of models, as ``replicate.models.list()`` reads it."""
    return model_list(fleet)


async def _answer(
    request: Request,
    service: Service,
    settings: Settings,
    store: ImageStore,
    params: GenerationParams,
    job: Job,
    kind: EventKind,
) -> Response:
    """The images of ``job`` as OpenAI answers: ImagesResponse JSON, or a stream of ``kind``'s
    events (``image_generation`` or ``image_edit``) when the client asked for one."""
    created = int(time.time())
    if params.stream:
        return await stream_images(service, job, params, created, kind)
    result = await until_disconnect(request, service.submit(job))
    images = await final_images(result, params, service.engine.lossy)
    data: list[dict[str, Any]] = [{"seed": image.seed} for image in images]
    if params.response_format == "url":
        base = settings.public_url or str(request.base_url).rstrip("/")
        for item, token in zip(data, _links(store, images), strict=True):
            item["url"] = f"{base}/v1/images/files/{token}"
    else:
        for item, image in zip(data, images, strict=True):
            item["b64_json"] = b64(image.data)
    body: dict[str, Any] = {
        "created": created,
        "data": data,
        "output_format": (params.recompressed or (job.output_format,))[0],
        "size": f"{job.width}x{job.height}",
        "background": "opaque",
    }
    if params.identifier:
        body["safety_identifier"] = params.identifier
    return JSONResponse(body, headers=cache_header(result))


def _links(store: ImageStore, images: list[FinalImage]) -> list[str]:
    """Tokens for ``images``, stored together so that none is evicted by its siblings."""
    try:
        return store.put_all([(image.data, image.media_type) for image in images])
    except OverBudget as exc:
        raise OpenAIError(
            400,
            f"this response's images take {exc.needed / 2**20:.3g} MB, more than the "
            f"{exc.max_bytes / 2**20:.3g} MB this server keeps behind image links "
            "(IMAGE_LINK_STORE_MB); ask for response_format=b64_json or fewer or smaller "
            "images, or raise IMAGE_LINK_STORE_MB",
            param="response_format",
            code="image_links_over_budget",
        ) from None


@router.get(
    "/images/files/{token}",
    response_class=Response,
    responses={
        200: IMAGE_FILE,
        **ERRORS.responses(404),
    },
)
async def image_file(token: str, store: ImageStoreDep) -> Response:
    """An image behind a response_format=url link; the unguessable URL is the credential."""
    image = store.get(token)
    if image is None:
        raise OpenAIError(
            404,
            f"this image URL has expired or never existed (URLs work for "
            f"{store.ttl_s:g}s, IMAGE_LINK_TTL_S); generate the image again",
            code="not_found",
        )
    left = image.seconds_left(store.clock())
    headers = {"Cache-Control": f"private, max-age={left}"}
    return Response(image.data, media_type=image.media_type, headers=headers)
