"""OpenAI's images API (``routes``): its parameters (``params``) and their OpenAPI schemas
(``schema``), its error body and events (``shapes``), partial-image streams (``stream``) and
the images behind ``response_format=url`` links (``image_store``)."""

from inference.http.protocols import Protocol, paths_of
from inference.http.protocols.openai import routes, schema
from inference.http.protocols.openai.shapes import ERRORS

PROTOCOL = Protocol(
    name="openai",
    routers=(routes.router,),
    image_paths=paths_of(routes.router, routes.edits),
    errors=ERRORS,
    openapi=schema.document,
)
