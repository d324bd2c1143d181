"""Replicate's files API: ``POST /v1/files`` (what replicate 1.0.7's ``files.create`` and its
upload-before-run send: multipart, the file in the ``content`` part, optional ``metadata``
JSON), ``GET``/``DELETE /v1/files/{id}``, ``GET /v1/files`` and the bytes at
``/v1/files/{id}/download``. The file object is Replicate's: id, name, content_type, size,
etag, checksums, metadata, created_at, expires_at and ``urls.get``, the URL a prediction's
input names the file by (``file_store.resolve``). Same bearer token as every route; each file
at most MAX_IMAGE_BYTES (413), the store bounded by FILES_MAX_COUNT, FILES_MAX_BYTES and
FILES_TTL_S.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from inference.errors import InvalidRequest
from inference.http.deps import PROTECTED, ServiceDep, SettingsDep
from inference.http.errors import CLIENT_GONE
from inference.http.protocols.predictions import base_url
from inference.http.protocols.replicate.errors import ERRORS
from inference.http.protocols.replicate.file_store import (
    FileStore,
    StoredFile,
    files_url,
    get_file_store,
)
from inference.predictions import new_id
from inference.predictions.envelopes import timestamp
from inference.service import Service

router = APIRouter(
    prefix="/v1/files",
    tags=["replicate"],
    dependencies=PROTECTED,
    route_class=ERRORS.route_class,
    responses=ERRORS.responses(401, 413, 429),
)
FileStoreDep = Annotated[FileStore, Depends(get_file_store)]
NOT_FOUND = ERRORS.responses(404)
#: The parts Replicate's API takes besides the file: ``filename``, ``type``, ``metadata``.
TEXT_PARTS = ("filename", "type", "metadata")


def file_object(file: StoredFile, base: str) -> dict[str, Any]:
    """Replicate's file object. ``etag`` is the MD5, as S3 (Replicate's storage) writes it."""
    return {
        "id": file.id,
        "name": file.name,
        "content_type": file.content_type,
        "size": len(file.data),
        "etag": file.md5,
        "checksums": {"sha256": file.sha256, "md5": file.md5},
        "metadata": file.metadata,
        "created_at": timestamp(file.created_at),
        "expires_at": timestamp(file.expires_at),
        "urls": {"get": f"{files_url(base)}{file.id}"},
    }


def _checksums(data: bytes) -> tuple[str, str]:
    """(MD5, SHA-256) in hex: milliseconds a megabyte, so never on the event loop."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest(), hashlib.sha256(data).hexdigest()


async def _upload(request: Request, max_bytes: int, service: Service) -> StoredFile:
    """The multipart body as a file not yet stored: the ``content`` part (its filename and
    type, or the ``filename`` and ``type`` parts), ``metadata`` a JSON object."""
    try:
        form = await request.form(max_files=1, max_fields=len(TEXT_PARTS), max_part_size=64_000)
    except CLIENT_GONE:
        raise
    except Exception as exc:  # starlette's MultiPartException and HTTPException carry the why
        detail = getattr(exc, "detail", None) or str(exc)
        raise InvalidRequest("body", f"the multipart body cannot be read: {detail}") from None
    try:
        content = form.get("content")
        if not isinstance(content, UploadFile):
            raise InvalidRequest(
                "content",
                "send the file as multipart/form-data in a part named 'content' (curl -F "
                "content=@photo.png), as replicate's files.create does",
            )
        data = await content.read()
        text = {name: form.get(name) for name in TEXT_PARTS}
    finally:
        await form.close()
    if len(data) > max_bytes:
        raise StarletteHTTPException(
            413,
            f"the file is {len(data)} bytes, over this server's {max_bytes} (MAX_IMAGE_BYTES); "
            "send a smaller file",
        )
    metadata = _metadata(text["metadata"])
    name = str(text["filename"] or content.filename or "file")
    content_type = str(text["type"] or content.content_type or "application/octet-stream")
    md5, sha256 = await service.run_blocking(_checksums, data)
    now = time.time()
    return StoredFile(
        new_id(), name[:255], content_type[:255], data, metadata, now, md5=md5, sha256=sha256
    )


def _metadata(text: object) -> dict[str, Any]:
    if text is None or text == "":
        return {}
    try:
        metadata = json.loads(str(text))
    except ValueError:
        metadata = None
    if not isinstance(metadata, dict):
        raise InvalidRequest("metadata", f"metadata must be a JSON object, got {str(text)[:100]!r}")
    return metadata


def _not_found(file_id: str) -> StarletteHTTPException:
    return StarletteHTTPException(
        404, f"file {file_id[:100]!r} not found (deleted, or dropped after FILES_TTL_S)"
    )


def _found(store: FileStore, file_id: str) -> StoredFile:
    file = store.get(file_id)
    if file is None:
        raise _not_found(file_id)
    return file


@router.post(
    "",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["content"],
                        "properties": {
                            "content": {"type": "string", "format": "binary"},
                            "filename": {"type": "string"},
                            "type": {"type": "string"},
                            "metadata": {"type": "string", "description": "A JSON object."},
                        },
                    }
                }
            },
        }
    },
    responses=ERRORS.responses(422),
)
async def create_file(
    request: Request, settings: SettingsDep, service: ServiceDep, store: FileStoreDep
) -> JSONResponse:
    """Upload a file a prediction's input can name by its ``urls.get``."""
    file = store.put(await _upload(request, settings.max_image_bytes, service))
    return JSONResponse(file_object(file, base_url(request, settings)), status_code=201)


@router.get("")
async def list_files(request: Request, settings: SettingsDep, store: FileStoreDep) -> JSONResponse:
    """The files kept now, newest first (one page: the store holds FILES_MAX_COUNT at most)."""
    base = base_url(request, settings)
    results = [file_object(file, base) for file in store.newest_first()]
    return JSONResponse({"previous": None, "next": None, "results": results})


@router.get("/{file_id}", responses=NOT_FOUND)
async def get_file(
    file_id: str, request: Request, settings: SettingsDep, store: FileStoreDep
) -> JSONResponse:
    """The file object."""
    return JSONResponse(file_object(_found(store, file_id), base_url(request, settings)))


@router.get("/{file_id}/download", response_class=Response, responses=NOT_FOUND)
async def download_file(file_id: str, store: FileStoreDep) -> Response:
    """The file's bytes."""
    file = _found(store, file_id)
    return Response(file.data, media_type=file.content_type)


@router.delete("/{file_id}", status_code=204, response_class=Response, responses=NOT_FOUND)
async def delete_file(file_id: str, store: FileStoreDep) -> Response:
    """Forget the file now."""
    if not store.delete(file_id):
        raise _not_found(file_id)
    return Response(status_code=204)
