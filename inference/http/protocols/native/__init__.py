"""This server's own API: POST /predict (JSON or multipart, JSON or image bytes back) and
POST /predict/batch (``routes``), in the app's ``{"error": ...}`` envelope."""

from inference.http.protocols import Protocol, paths_of
from inference.http.protocols.native import openapi, routes

PROTOCOL = Protocol(
    name="native",
    routers=(routes.router,),
    image_paths=paths_of(routes.router, routes.predict, routes.predict_batch),
    openapi=openapi.document,
)
