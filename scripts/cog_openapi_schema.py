"""Write ``.cog/openapi_schema.json`` for predict.py, as ``cog build`` would, without Docker.

Cog's prediction server (``python -m cog.server.http``) validates inputs only against this file;
without it every input is accepted and ``/openapi.json`` answers 503. ``cog build`` writes it by
parsing predict.py with a Go parser that is not on PyPI, so this script reads the same inputs
with the pinned SDK's own inspector (``cog._inspector``, private, cog 0.23.1) and lays them out
the way cog's generator does (``pkg/schema/openapi.go``: ``x-order``, titles, ``nullable``,
``minimum``/``maximum``, choices as ``allOf`` references to an enum schema).

    python scripts/cog_openapi_schema.py            # from the folder holding cog.yaml
    python scripts/cog_openapi_schema.py --root DIR --out DIR/.cog/openapi_schema.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml


def _title(name: str) -> str:
    return " ".join(part.capitalize() for part in name.split("_"))


def _title_single(name: str) -> str:
    return name[:1].upper() + name[1:]


def input_schema(info: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``Input`` schema and the enum schemas its choices refer to."""
    from cog import _adt as adt

    optional = (adt.Repetition.OPTIONAL, adt.Repetition.OPTIONAL_REPEATED)
    properties: dict[str, Any] = {}
    enums: dict[str, Any] = {}
    required = []
    for name, field in sorted(info.inputs.items(), key=lambda item: item[1].order):
        prop: dict[str, Any] = {"x-order": field.order}
        if field.choices:
            enum_name = _title_single(name)
            enums[enum_name] = {
                "title": enum_name,
                "description": "An enumeration.",
                "enum": list(field.choices),
                "type": field.type.primitive.json_type().get("type", "string"),
            }
            prop["allOf"] = [{"$ref": f"#/components/schemas/{enum_name}"}]
        else:
            prop["title"] = _title(name)
            prop.update(sorted(field.type.json_type().items()))
        if field.default is None and field.type.repetition not in optional:
            required.append(name)
        if field.default is not None:
            prop["default"] = field.type.json_encode(field.default)
        if field.type.repetition is adt.Repetition.OPTIONAL:
            prop["nullable"] = True
        for key, value in (
            ("description", field.description),
            ("minimum", field.ge),
            ("maximum", field.le),
            ("minLength", field.min_length),
            ("maxLength", field.max_length),
            ("pattern", field.regex),
        ):
            if value is not None:
                # Go writes a whole float64 without a fraction: 64.0 -> 64
                prop[key] = int(value) if isinstance(value, float) and value.is_integer() else value
        if field.deprecated:
            prop["deprecated"] = True
        properties[name] = prop
    schema: dict[str, Any] = {"title": "Input", "type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema, enums


def openapi_schema(root: Path, ref: str) -> dict[str, Any]:
    """The OpenAPI document for predictor ``ref`` (``predict.py:Predictor``) under ``root``."""
    from cog import _inspector

    module_file, _, class_name = ref.partition(":")
    sys.path.insert(0, str(root))
    module_name = Path(module_file).stem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # BasePredictor/predict() are fine
        importlib.invalidate_caches()
        info = _inspector.create_predictor(module_name, class_name)
    inputs, enums = input_schema(info)
    request = {"$ref": "#/components/schemas/PredictionRequest"}
    response = {"$ref": "#/components/schemas/PredictionResponse"}
    validation_error = {
        "description": "Validation Error",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
        },
    }
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {
            "/predictions": {
                "post": {
                    "summary": "Predict",
                    "description": "Run a single prediction on the model",
                    "operationId": "predict_predictions_post",
                    "requestBody": {"content": {"application/json": {"schema": request}}},
                    "responses": {
                        "200": {
                            "description": "Successful Response",
                            "content": {"application/json": {"schema": response}},
                        },
                        "422": validation_error,
                    },
                }
            }
        },
        "components": {
            "schemas": {
                "Input": inputs,
                "Output": info.output.json_type(),
                **enums,
                "PredictionRequest": {
                    "title": "PredictionRequest",
                    "type": "object",
                    "properties": {
                        "id": {"title": "Id", "type": "string"},
                        "input": {"$ref": "#/components/schemas/Input"},
                    },
                },
                "PredictionResponse": {
                    "title": "PredictionResponse",
                    "type": "object",
                    "properties": {
                        "input": {"$ref": "#/components/schemas/Input"},
                        "output": {"$ref": "#/components/schemas/Output"},
                        "id": {"title": "Id", "type": "string"},
                        "status": {"title": "Status", "type": "string"},
                        "error": {"title": "Error", "type": "string"},
                        "logs": {"title": "Logs", "type": "string"},
                        "metrics": {"title": "Metrics", "type": "object"},
                    },
                },
                "HTTPValidationError": {
                    "title": "HTTPValidationError",
                    "type": "object",
                    "properties": {
                        "detail": {
                            "title": "Detail",
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/ValidationError"},
                        }
                    },
                },
                "ValidationError": {
                    "title": "ValidationError",
                    "required": ["loc", "msg", "type"],
                    "type": "object",
                    "properties": {
                        "loc": {
                            "title": "Location",
                            "type": "array",
                            "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                        },
                        "msg": {"title": "Message", "type": "string"},
                        "type": {"title": "Error Type", "type": "string"},
                    },
                },
            }
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="folder with cog.yaml")
    parser.add_argument("--out", type=Path, help="default: ROOT/.cog/openapi_schema.json")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    config = yaml.safe_load((root / "cog.yaml").read_text())
    ref = config.get("run") or config.get("predict") or "predict.py:Predictor"
    out = args.out or root / ".cog" / "openapi_schema.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(openapi_schema(root, ref), indent=2) + "\n")
    sys.stdout.write(f"wrote {out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
