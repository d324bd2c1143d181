"""What the native routes accept that their types do not say: a batch's size on this server,
and the ``model`` a request may name.

``/predict`` reads its body by hand (JSON or a form, ``forms.read_request``), so the document
shows ``GenerateRequest``; the body is a ``RoutedRequest``, which adds ``model``. The document
gets a ``RoutedRequest`` schema (the deployment's bounded ``GenerateRequest`` with ``model``),
for /predict's JSON body and for each item of /predict/batch, and the form gains ``model`` too.
"""

from __future__ import annotations

import copy
from typing import Any

from inference.schema import Limits, RoutedRequest
from inference.settings import Settings

#: Where a component schema is referenced from.
REF = "#/components/schemas/{}"
#: What the document shows ``model`` as: a model's name, and a version of it pinned.
MODEL_EXAMPLES = ["draft", "draft@v2"]
#: A batch item: a RoutedRequest, but any object is accepted, since an invalid item is answered
#: as that item's error beside the others' results (200), not as a 422 for the whole batch.
BATCH_ITEM = {
    "anyOf": [
        {"$ref": REF.format("RoutedRequest")},
        {
            "type": "object",
            "description": "Any other object: validated on its own and answered as this "
            "item's error in the results.",
        },
    ]
}


def document(document: dict[str, Any], limits: Limits, settings: Settings) -> None:
    schemas = document["components"]["schemas"]
    batch = schemas["BatchRequest"]["properties"]["requests"]
    batch["maxItems"] = settings.max_batch_requests
    model = {**RoutedRequest.model_json_schema()["properties"]["model"]}
    model["examples"] = MODEL_EXAMPLES
    routed = copy.deepcopy(schemas["GenerateRequest"])  # with this deployment's limits
    routed["title"] = "RoutedRequest"
    routed["description"] = (
        "A GenerateRequest that may name the model serving it (POST /predict, and each item "
        "of POST /predict/batch)."
    )
    routed["properties"]["model"] = model
    schemas["RoutedRequest"] = routed
    schemas["GenerateRequestForm"]["properties"]["model"] = copy.deepcopy(model)
    batch["items"] = BATCH_ITEM
    body = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    body["schema"] = {"$ref": REF.format("RoutedRequest")}
