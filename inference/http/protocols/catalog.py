"""The models this server has, as the OpenAI and Replicate protocols describe them.

``GET /v1/models`` is one path that two client ecosystems read: OpenAI's
``client.models.list()`` (base URL ``.../v1``) reads ``object`` and ``data``, a list of model
objects whose ``id`` selects the model; Replicate's ``replicate.models.list()`` reads a page,
``results``, ``next`` and ``previous``, of Replicate model objects. Neither client rejects
the other's keys (OpenAI's page model keeps unknown fields, Replicate's ``Page`` ignores them)
and neither sends a header that names its protocol reliably (both are reached through the
same URL and a bearer token), so the path answers one body that carries both: the list is a
few hundred bytes per model, and a client reads its own half.

The Replicate model objects are built here too, so ``GET /v1/models/{owner}/{name}`` (the
Replicate protocol's) and the list describe a model the same way.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from inference import __version__
from inference.fleet import Fleet
from inference.predictions.envelopes import timestamp
from inference.schema import GenerateRequest
from inference.service import Service

#: The Cog version Replicate's version objects report (the schema below is Cog's shape).
COG_VERSION = "0.23.1"
#: The owner in a listed model's ``owner/name``: any owner selects the model on this server.
LOCAL_OWNER = "local"


def model_list(fleet: Fleet) -> dict[str, Any]:
    """The body of ``GET /v1/models``, readable by both clients (see the module docstring)."""
    names = _model_names(fleet)
    return {
        "object": "list",
        "data": [_openai_model(model_id) for model_id in model_ids(fleet)],
        "results": [replicate_model(fleet, LOCAL_OWNER, name) for name in names],
        "next": None,
        "previous": None,
    }


def model_ids(fleet: Fleet) -> list[str]:
    """The ids ``model`` may take: without a registry, the served model's own name (any name
    selects it); with one, each model, then each of its versions pinned."""
    registry = fleet.registry
    if registry.implicit:
        return [fleet.default.model.name]
    pins = [str(v.ref) for spec in registry.models.values() for v in spec.versions]
    return [*registry.models, *pins]


def _model_names(fleet: Fleet) -> list[str]:
    registry = fleet.registry
    return [fleet.default.model.name] if registry.implicit else list(registry.models)


def _openai_model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "diffusion-serve"}


def replicate_model(fleet: Fleet, owner: str, name: str) -> dict[str, Any]:
    """The model ``name`` as Replicate's client reads it, its latest version the one most of
    its traffic reaches (without a registry any name is the served model); ``UnknownModel``,
    listing the names, for a name the registry lacks."""
    ids = version_ids(fleet, name)
    spec = None if fleet.registry.implicit else fleet.registry.models[name]
    weights = {} if spec is None else fleet.registry.weights(name)
    latest = max(ids, key=lambda ref: weights.get(ref.partition("@")[2], 0.0))
    return {
        "url": f"https://replicate.com/{owner}/{name}",
        "owner": owner,
        "name": name,
        "description": spec.description if spec is not None else None,
        "visibility": "private",
        "github_url": None,
        "paper_url": None,
        "license_url": None,
        "run_count": 0,
        "cover_image_url": None,
        "default_example": None,
        "latest_version": version_object(latest),
    }


def version_ids(fleet: Fleet, name: str) -> list[str]:
    """The Replicate version ids of model ``name``: ``name@version`` each, or without a
    registry the served model's one id; ``UnknownModel`` for a name the registry lacks."""
    if fleet.registry.implicit:
        return [served_version_id(fleet.default)]
    weights = fleet.registry.weights(name)  # UnknownModel, listing the names, if none
    return [f"{name}@{version}" for version in weights]


def served_version_id(service: Service) -> str:
    """A stable 64-hex version id for the served model (Replicate's version ids look so)."""
    return hashlib.sha256(f"{service.model.name}@{__version__}".encode()).hexdigest()


def version_object(version_id: str) -> dict[str, Any]:
    """A version as Replicate describes it: the input and output schema."""
    output = {"type": "array", "items": {"type": "string", "format": "uri"}, "title": "Output"}
    return {
        "id": version_id,
        "created_at": timestamp(time.time()),
        "cog_version": COG_VERSION,
        "openapi_schema": {
            "openapi": "3.0.2",
            "components": {
                "schemas": {"Input": GenerateRequest.model_json_schema(), "Output": output}
            },
        },
    }
