"""Replicate's HTTP API over the prediction store (``routes``), its file uploads (``files``,
kept in ``file_store``), the ``Cancel-After`` deadlines (``deadlines``), its problem-details
errors (``errors``) and what the OpenAPI document says of it (``openapi``)."""

from inference.http.protocols import Protocol, paths_of
from inference.http.protocols.predictions import lifespan
from inference.http.protocols.replicate import files, openapi, routes
from inference.http.protocols.replicate.errors import ERRORS

PROTOCOL = Protocol(
    name="replicate",
    routers=(routes.router, files.router),
    image_paths=(
        *paths_of(routes.router, routes.create_prediction, routes.create_model_prediction),
        *paths_of(files.router, files.create_file),
    ),
    errors=ERRORS,
    openapi=openapi.document,
    lifespan=lifespan,
)
