"""What Cog's routes accept that their loose types do not say, written into the document: the
request body's inputs, webhook and id, and PUT's id in the path (a body's own id may only
repeat it, which no schema says)."""

from __future__ import annotations

import copy
from typing import Any

from inference.http.openapi import operations, set_parameter
from inference.http.protocols.predictions import document_body
from inference.predictions.record import ID_PATTERN
from inference.schema import Limits
from inference.settings import Settings


def document(document: dict[str, Any], limits: Limits, settings: Settings) -> None:
    schemas = document["components"]["schemas"]
    document_body(schemas, "PredictionRequest")
    put = copy.deepcopy(schemas["PredictionRequest"])
    del put["properties"]["id"]
    put.update(title="PredictionPut", additionalProperties=True)
    schemas["PredictionPut"] = put
    for path, method, operation in operations(document):
        if path == "/predictions/{prediction_id}" and method == "put":
            id_schema = {"type": "string", "pattern": ID_PATTERN.pattern}
            set_parameter(operation, "prediction_id", id_schema)
            content = operation["requestBody"]["content"]["application/json"]
            content["schema"] = {"$ref": "#/components/schemas/PredictionPut"}
