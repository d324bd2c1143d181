"""The one validation pipeline: a request becomes a ``Job`` here and nowhere else.

Every front door (HTTP, Cog, Modal, batch jobs, CLI, UI) hands the service a dict or a
``GenerateRequest``; ``Validator.job`` runs the same three stages on it, in order:

1. the schema (``GenerateRequest``: types, hard bounds, multiples of 8), its errors joined into
   one ``InvalidRequest`` whose message names each field and value;
2. this deployment's limits (MAX_*) and defaults (the model's own, capped to the limits, then
   DEFAULT_* overrides), and a seed for every image; an image and mask are decoded here
   (``inference.images``: MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, URL fetching) and brought to the
   job's size;
3. the loaded model's own capabilities, through its ``check`` hook.

So a bad value reads the same wherever it was sent, and a job the model cannot run is refused
before it is queued rather than failing the batch it would have joined.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from inference.errors import InvalidRequest, ModelLoadError
from inference.lora_spec import LoraAdapter
from inference.schema import (
    SEED_MAX,
    Defaults,
    GenerateRequest,
    Job,
    Limits,
    Picture,
    random_seed,
)

if TYPE_CHECKING:
    import numpy as np

    from inference.models.base import Model
    from inference.settings import Settings


def describe_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    """Pydantic errors as ``{"field", "message"}`` pairs whose message names field and value.

    Values are shown as JSON and shortened: an error never echoes a whole prompt.
    """
    described = []
    for error in errors:
        loc = [part for part in error["loc"] if part != "body"]
        kind = error["type"]
        if kind == "json_invalid":  # loc ends with the character position, not a field
            detail = (error.get("ctx") or {}).get("error", "syntax error")
            at = f" at character {loc[-1]}" if loc else ""
            message = f"the body is not valid JSON ({detail}{at}); send a JSON object"
            described.append({"field": "body", "message": message})
            continue
        field = ".".join(str(part) for part in loc) or "body"
        leaf = str(loc[-1]) if loc else "body"
        message = error["msg"].removeprefix("Value error, ")
        value = error.get("input")
        if field == "body" and isinstance(value, bytes | str):
            message = (
                "the body must be a JSON object of request fields, sent with "
                "'Content-Type: application/json'"
            )
        elif message.startswith(leaf):  # our own validators name the field and value already
            message = message if field == leaf else f"{field}: {message}"
        elif kind in ("missing", "extra_forbidden"):
            message = f"{field}: {message}"
        elif ", got " in message:  # "a valid integer, got a number with a fractional part"
            message = f"{field}: {message} ({_shown(value)})"
        else:
            message = f"{field}: {message}, got {_shown(value)}"
        described.append({"field": field, "message": message})
    return described


def _shown(value: Any, limit: int = 60) -> str:
    """``value`` as a client wrote it (JSON), shortened to ``limit`` characters."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    if isinstance(value, str) and len(value) > limit:
        return f'{json.dumps(value[:limit])[:-1]}..." ({len(value)} characters)'
    if isinstance(value, bytes):
        return f"{len(value)} bytes"
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


#: The most problems one error answer lists, and the characters of each field and message:
#: the answer stays a few KB however many problems a body has ("and N more" says the rest).
MAX_LISTED_ERRORS = 20
MAX_FIELD_CHARS = 100
MAX_MESSAGE_CHARS = 300


def _clipped(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def invalid_request(errors: Sequence[Any]) -> InvalidRequest:
    """One ``InvalidRequest`` for pydantic's ``errors``: the first ``MAX_LISTED_ERRORS``
    problems, named, in one message, and how many more there are.

    Every error answer of every protocol is built here, so this is the one bound on its size.
    """
    described = [
        {
            "field": _clipped(e["field"], MAX_FIELD_CHARS),
            "message": _clipped(e["message"], MAX_MESSAGE_CHARS),
        }
        for e in describe_errors(errors[:MAX_LISTED_ERRORS])
    ]
    message = "; ".join(e["message"] for e in described)
    if (more := len(errors) - len(described)) > 0:
        rest = f"and {more} more problems; fix these first"
        described.append({"field": "body", "message": rest})
        message = f"{message}; {rest}"
    return InvalidRequest(described[0]["field"], message, described)


def parse(request: GenerateRequest | Mapping[str, Any]) -> GenerateRequest:
    """Stage 1: the schema. A dict is validated; a model passes through as it is."""
    if isinstance(request, GenerateRequest):
        return request
    if not isinstance(request, Mapping):
        raise InvalidRequest(
            "request",
            f"a request must be a dict of GenerateRequest fields, got {type(request).__name__}",
        )
    try:
        return GenerateRequest.model_validate(dict(request))
    except ValidationError as exc:
        raise invalid_request(exc.errors()) from None


def capped(defaults: Defaults, limits: Limits, multiple: int) -> Defaults:
    """A model's own defaults within this deployment's limits, so that a request that omits a
    field is valid (an SDXL model under MAX_WIDTH=512 draws 512 wide by default)."""

    def fit(side: int, bound: int) -> int:
        return side if side <= bound else max(multiple, bound - bound % multiple)

    return replace(
        defaults,
        steps=min(defaults.steps, limits.max_steps),
        width=fit(defaults.width, limits.max_width),
        height=fit(defaults.height, limits.max_height),
    )


class Validator:
    """Turns requests into jobs for one model under one deployment's settings."""

    def __init__(self, model: Model, settings: Settings) -> None:
        self.model = model
        self.settings = settings
        self.limits = settings.limits

    @property
    def defaults(self) -> Defaults:
        """The model's defaults (which may change once it has loaded), capped, then DEFAULT_*."""
        s = self.settings
        own = capped(self.model.defaults, self.limits, self.model.size_multiple)
        return Defaults(
            steps=s.default_steps or own.steps,
            prompt_weight=own.prompt_weight
            if s.default_prompt_weight is None
            else s.default_prompt_weight,
            width=s.default_width or own.width,
            height=s.default_height or own.height,
            strength=own.strength,
        )

    def job(self, request: GenerateRequest | Mapping[str, Any]) -> Job:
        """The request as a job: schema, then limits and defaults, then the model's check."""
        request = parse(request)
        image, mask = self._inputs(request)
        defaults, limits = self.defaults, self.limits
        steps = request.steps if request.steps is not None else defaults.steps
        width = request.width if request.width is not None else defaults.width
        height = request.height if request.height is not None else defaults.height
        if image is not None and request.width is None and request.height is None:
            from inference.images import natural_size

            h, w = image.shape[:2]
            width, height = natural_size(w, h, limits, self.model.size_multiple)
        weight = (
            request.prompt_weight if request.prompt_weight is not None else defaults.prompt_weight
        )
        for field, value, bound, setting in (
            ("num_outputs", request.num_outputs, limits.max_outputs, "MAX_BATCH_SIZE"),
            ("steps", steps, limits.max_steps, "MAX_STEPS"),
            ("width", width, limits.max_width, "MAX_WIDTH"),
            ("height", height, limits.max_height, "MAX_HEIGHT"),
        ):
            if value > bound:
                raise InvalidRequest(
                    field, f"{field} must be <= {bound} on this server ({setting}), got {value}"
                )
        if width * height > limits.max_pixels:
            raise InvalidRequest(
                "width",
                f"width x height must be <= {limits.max_pixels} pixels on this server "
                f"(MAX_PIXELS), got {width}x{height} = {width * height}",
            )
        loras = self._loras(request)
        seed = request.seed if request.seed is not None else random_seed()
        resolved: dict[str, Any] = {
            "seeds": tuple((seed + i) % (SEED_MAX + 1) for i in range(request.num_outputs)),
            "prompt_weight": float(weight),
            "steps": steps,
            "width": width,
            "height": height,
            "seed_drawn": request.seed is None,
            **self._fitted(image, mask, request.strength, width, height),
            "loras": loras,
        }
        # Every other Job field is the request's own value: a new field needs no edit here.
        job = Job(
            **resolved,
            **{f.name: getattr(request, f.name) for f in fields(Job) if f.name not in resolved},
        )
        self.model.check(job)
        return job

    def _inputs(self, request: GenerateRequest) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The request's image and mask decoded (not resized yet), or why they cannot be."""
        if request.image is None:
            for name, why in (
                ("mask", "which of its pixels to repaint"),
                ("strength", "how far to move from it"),
            ):
                if getattr(request, name) is not None:
                    message = (
                        f"{name} needs an image ({name} says {why}): send image, or omit {name}"
                    )
                    raise InvalidRequest(name, message)
            return None, None
        from inference.images import load

        image = load(request.image, "image", self.settings)
        if request.mask is None:
            return image, None
        mask = load(request.mask, "mask", self.settings, mask=True)
        if mask.shape[:2] != image.shape[:2]:
            (mh, mw), (ih, iw) = mask.shape[:2], image.shape[:2]
            raise InvalidRequest(
                "mask",
                f"mask is {mw}x{mh} but image is {iw}x{ih}; send a mask of the image's size",
            )
        return image, mask

    def _fitted(
        self,
        image: np.ndarray | None,
        mask: np.ndarray | None,
        strength: float | None,
        width: int,
        height: int,
    ) -> dict[str, Any]:
        """The Job's image fields: pixels brought to width x height, the strength resolved."""
        if image is None:
            return {"image": None, "mask": None, "strength": None}
        from inference.images import binarize, fit

        return {
            "image": Picture.of(fit(image, width, height)),
            "mask": None if mask is None else Picture.of(binarize(fit(mask, width, height))),
            "strength": self.defaults.strength if strength is None else float(strength),
        }

    def _loras(self, request: GenerateRequest) -> tuple[LoraAdapter, ...]:
        """The request's adapters (DEFAULT_LORAS when omitted), within MAX_LORAS, each once."""
        loras = self.settings.default_loras if request.loras is None else request.loras
        if len(loras) > self.settings.max_loras:
            raise InvalidRequest(
                "loras",
                f"loras: at most {self.settings.max_loras} adapters per request on this server "
                f"(MAX_LORAS), got {len(loras)}; drop some",
            )
        refs = [adapter.ref for adapter in loras]
        for ref in refs:
            if refs.count(ref) > 1:
                raise InvalidRequest(
                    "loras", f"loras: adapter {ref!r} is listed twice; list it once with one scale"
                )
        return tuple(loras)

    def warm_up_job(self) -> Job:
        """A small job at the size actually served, built from the empty request.

        This is where "the defaults must fit the limits" is enforced: limits tighter than the
        defaults would refuse every request that omits a field and blame its sender, so the
        configuration is refused at start instead.
        """
        try:
            job = self.job(GenerateRequest(prompt="warm-up", seed=0))
        except InvalidRequest as exc:
            raise ModelLoadError(
                f"the default request does not fit this server's limits: {exc}; raise that "
                f"limit or set DEFAULT_{exc.field.upper()} (the model {self.model.name!r} "
                f"defaults to {self.model.defaults})"
            ) from None
        return replace(job, steps=min(2, job.steps))
