"""Cog's HTTP API over the prediction store (``routes``), its ``{"detail"}`` errors
(``errors``) and what the OpenAPI document says of it (``openapi``)."""

from inference.http.protocols import Protocol, paths_of
from inference.http.protocols.cog import openapi, routes
from inference.http.protocols.cog.errors import ERRORS
from inference.http.protocols.predictions import lifespan

PROTOCOL = Protocol(
    name="cog",
    routers=(routes.router,),
    image_paths=paths_of(routes.predictions, routes.create_prediction, routes.put_prediction),
    errors=ERRORS,
    openapi=openapi.document,
    lifespan=lifespan,
)
