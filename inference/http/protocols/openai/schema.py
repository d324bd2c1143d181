"""The OpenAPI schemas of OpenAI's image parameters, which its routes read by hand
(``params``): the generation body and the edit form, with our extensions typed and
bounded as ``GenerateRequest`` is on this server (its limits already in ``request``)."""

from __future__ import annotations

import copy
from typing import Any

from inference import codec
from inference.http.forms import as_form
from inference.schema import Limits
from inference.settings import Settings


def _size_pattern(limits: Limits, multiple: int, minimum: int) -> str:
    """OpenAI's ``size``: ``auto`` or ``WxH`` within this server's limits, multiples of 8."""

    def sides(maximum: int) -> str:
        return "|".join(str(n) for n in range(minimum, maximum + 1, multiple))

    return f"^(?:auto|(?:{sides(limits.max_width)})x(?:{sides(limits.max_height)}))$"


def generation_params_schema(request: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """The body of POST /v1/images/generations: OpenAI's parameters, and our extensions with
    the types and bounds of ``GenerateRequest`` (``request``, this server's limits in it)."""
    native = request["properties"]
    width = next(b for b in native["width"]["anyOf"] if b.get("type") == "integer")
    nullable = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    params: dict[str, Any] = {
        "prompt": {**native["prompt"], "description": "What to draw (our `prompt`)."},
        "n": {
            "anyOf": [
                {k: v for k, v in native["num_outputs"].items() if k != "default"},
                {"type": "null"},
            ],
            "description": "Images to generate (our `num_outputs`).",
        },
        "size": {
            "anyOf": [
                {
                    "type": "string",
                    "pattern": _size_pattern(
                        limits, native["width"].get("multipleOf", 8), width.get("minimum", 8)
                    ),
                },
                {"type": "null"},
            ],
            "description": "'WIDTHxHEIGHT' or 'auto' (the model's own).",
        },
        "output_format": {
            "anyOf": [
                {k: v for k, v in native["output_format"].items() if k != "default"},
                {"type": "null"},
            ]
        },
        "response_format": {
            "anyOf": [{"enum": ["b64_json", "url"], "type": "string"}, {"type": "null"}]
        },
        "stream": {"anyOf": [{"type": "boolean"}, {"type": "null"}]},
        "partial_images": {
            "anyOf": [{"type": "integer", "minimum": 0, "maximum": 3}, {"type": "null"}]
        },
        "output_compression": {
            "anyOf": [{"type": "integer", "minimum": 0, "maximum": 100}, {"type": "null"}],
            "description": "JPEG or WebP quality (100: the largest, best file); omitted: "
            f"{codec.LOSSY_QUALITY}. png ignores it.",
        },
        "background": {"anyOf": [{"enum": ["auto", "opaque"], "type": "string"}, {"type": "null"}]},
        "model": {**nullable, "description": "Ignored: this server serves one model."},
        "user": nullable,
        "safety_identifier": nullable,
    }
    for ignored in ("quality", "style", "moderation", "complexity"):
        params[ignored] = {"description": "Accepted and ignored."}
    for name in ("seed", "negative_prompt", "steps", "prompt_weight", "scheduler"):
        field = {k: v for k, v in native[name].items() if k != "default"}
        if "anyOf" not in field:
            field = {"anyOf": [field, {"type": "null"}]}
        params[name] = field
    return {
        "title": "GenerationParams",
        "type": "object",
        "properties": params,
        "required": ["prompt"],
        "additionalProperties": False,
    }


def edit_params_schema(generation: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """The form of POST /v1/images/edits: the generation parameters, the image and OpenAI's
    mask as uploads, and ``strength`` as in ``GenerateRequest``."""
    body = copy.deepcopy(generation)
    native = request["properties"]
    body["properties"].update(
        image={"description": "The image to edit (one; as `image` or `image[]`)."},
        mask={
            "description": "A PNG of the image's size whose fully transparent pixels are "
            "repainted; without it, the image's own transparent pixels, else all of it."
        },
        strength={k: v for k, v in native["strength"].items() if k != "default"},
        input_fidelity={"description": "Accepted and ignored."},
    )
    for field in body["properties"].values():
        if field.keys() <= {"description"}:  # any JSON value is ignored; a form part is text
            field["type"] = "string"
    body["required"] = ["image", "prompt"]
    return as_form(body, "EditParams", ("image", "mask"))


def document(document: dict[str, Any], limits: Limits, settings: Settings) -> None:
    """The routes read their bodies by hand (errors in OpenAI's shape): write what they accept."""
    schemas = document["components"]["schemas"]
    generation = generation_params_schema(schemas["GenerateRequest"], limits)
    schemas["GenerationParams"] = generation
    schemas["EditParams"] = edit_params_schema(generation, schemas["GenerateRequest"])
    for path, media, name in (
        ("/v1/images/generations", "application/json", "GenerationParams"),
        ("/v1/images/edits", "multipart/form-data", "EditParams"),
    ):
        content = document["paths"][path]["post"]["requestBody"]["content"][media]
        content["schema"] = {"$ref": f"#/components/schemas/{name}"}
