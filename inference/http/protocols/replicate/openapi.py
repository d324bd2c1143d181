"""What Replicate's routes accept that their loose types do not say, written into the document:
the create body's inputs and webhooks, the Prefer header and the list's cursor."""

from __future__ import annotations

from typing import Any

from inference.http.openapi import operations, set_parameter
from inference.http.protocols.predictions import document_body
from inference.http.protocols.replicate.routes import PREFER
from inference.predictions.record import CURSOR
from inference.schema import Limits
from inference.settings import Settings


def document(document: dict[str, Any], limits: Limits, settings: Settings) -> None:
    document_body(document["components"]["schemas"], "CreatePrediction")
    for path, method, operation in operations(document):
        if "replicate" in operation.get("tags", []) and method == "post":
            set_parameter(operation, "prefer", {"type": "string", "pattern": PREFER.pattern})
        if path == "/v1/predictions" and method == "get":
            set_parameter(operation, "cursor", {"type": "string", "pattern": CURSOR.pattern})
