"""The request and result schema: the single source of truth for every runtime.

``GenerateRequest`` carries the hard bounds that no deployment may exceed; a deployment tightens
them through settings (``Limits``) and fills omitted fields from the model's defaults
(``Defaults``). ``resolve`` applies both and returns a ``Job``: a request with every value fixed,
including the seed of each image, which is what models see.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
)

from inference.errors import InvalidRequest

# Hard bounds. predict.py repeats these as literals (Cog parses it statically); a test keeps
# the two in step.
PROMPT_MAX_CHARS = 2000
SEED_MAX = 2**32 - 1
PROMPT_WEIGHT_MIN = 0.0
PROMPT_WEIGHT_MAX = 30.0
STEPS_MAX = 150
SIDE_MIN = 64
SIDE_MAX = 2048
SIDE_MULTIPLE = 8
NUM_OUTPUTS_MAX = 4
OutputFormat = Literal["png", "jpeg", "webp"]
#: Sampler choices for diffusers models (the mock model has one sampler and ignores this).
Scheduler = Literal[
    "ddim", "ddpm", "dpm++", "dpm++_karras", "euler", "euler_a", "heun", "lms", "pndm", "unipc"
]


class GenerateRequest(BaseModel):
    """One text-to-image request. Omitted fields take the served model's defaults."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field("", max_length=PROMPT_MAX_CHARS, description="What to draw.")
    negative_prompt: str = Field(
        "", max_length=PROMPT_MAX_CHARS, description="What to steer away from."
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=SEED_MAX,
        description="Random seed; omit for a random one (returned in the result). "
        "Image i of a request uses seed + i.",
    )
    prompt_weight: float | None = Field(
        None,
        ge=PROMPT_WEIGHT_MIN,
        le=PROMPT_WEIGHT_MAX,
        description="Guidance strength: how strongly the image follows the prompt. "
        "Omit for the model's default.",
    )
    steps: int | None = Field(
        None, ge=1, le=STEPS_MAX, description="Denoising steps; omit for the model's default."
    )
    width: int | None = Field(
        None,
        ge=SIDE_MIN,
        le=SIDE_MAX,
        description="Image width in pixels, a multiple of 8; omit for the model's default.",
    )
    height: int | None = Field(
        None,
        ge=SIDE_MIN,
        le=SIDE_MAX,
        description="Image height in pixels, a multiple of 8; omit for the model's default.",
    )
    num_outputs: int = Field(1, ge=1, le=NUM_OUTPUTS_MAX, description="Images to generate.")
    output_format: OutputFormat = Field("png", description="Encoding of the returned images.")
    scheduler: Scheduler | None = Field(
        None, description="Sampler for diffusers models; omit for the model's own."
    )

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, value: int | None, info: Any) -> int | None:
        if value is not None and value % SIDE_MULTIPLE:
            lower = value - value % SIDE_MULTIPLE
            raise ValueError(
                f"{info.field_name} must be a multiple of {SIDE_MULTIPLE}, got {value} "
                f"(try {max(lower, SIDE_MIN)} or {lower + SIDE_MULTIPLE})"
            )
        return value


@dataclass(frozen=True)
class Defaults:
    """Values used for fields a request omits; the model supplies them, settings may override."""

    steps: int
    prompt_weight: float
    width: int
    height: int


@dataclass(frozen=True)
class Limits:
    """A deployment's bounds, at most the schema's hard bounds."""

    max_steps: int = 100
    max_width: int = 1024
    max_height: int = 1024
    max_pixels: int = 1024 * 1024


@dataclass(frozen=True)
class Job:
    """A fully resolved request: what a model generates from. ``seeds`` has one per image."""

    prompt: str
    negative_prompt: str
    seeds: tuple[int, ...]
    prompt_weight: float
    steps: int
    width: int
    height: int
    output_format: OutputFormat
    scheduler: Scheduler | None = None

    @property
    def num_outputs(self) -> int:
        return len(self.seeds)


def describe_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    """Pydantic errors as ``{"field", "message"}`` pairs whose message names field and value.

    Used by every entry point (HTTP, CLI, Cog, UI, batch jobs) so a bad value reads the same
    everywhere. Values are shown as JSON and shortened: an error never echoes a whole prompt.
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
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


def random_seed() -> int:
    return secrets.randbelow(SEED_MAX + 1)


def resolve(request: GenerateRequest, defaults: Defaults, limits: Limits) -> Job:
    """Fill omitted fields and enforce the deployment's limits, naming the field on failure."""
    steps = request.steps if request.steps is not None else defaults.steps
    width = request.width if request.width is not None else defaults.width
    height = request.height if request.height is not None else defaults.height
    weight = request.prompt_weight if request.prompt_weight is not None else defaults.prompt_weight
    for field, value, bound, setting in (
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
            f"width x height must be <= {limits.max_pixels} pixels on this server (MAX_PIXELS), "
            f"got {width}x{height} = {width * height}",
        )
    seed = request.seed if request.seed is not None else random_seed()
    seeds = tuple((seed + i) % (SEED_MAX + 1) for i in range(request.num_outputs))
    return Job(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        seeds=seeds,
        prompt_weight=float(weight),
        steps=steps,
        width=width,
        height=height,
        output_format=request.output_format,
        scheduler=request.scheduler,
    )


def _b64decode(value: Any) -> Any:
    return base64.b64decode(value, validate=True) if isinstance(value, str) else value


Base64Bytes = Annotated[
    bytes,
    BeforeValidator(_b64decode),
    PlainSerializer(
        lambda b: base64.b64encode(b).decode("ascii"), return_type=str, when_used="json"
    ),
]


class GeneratedImage(BaseModel):
    """One encoded image; ``data`` is standard base64 in JSON."""

    data: Base64Bytes = Field(description="The encoded image (base64 in JSON).")
    seed: int = Field(description="The seed that reproduces this image with num_outputs=1.")
    width: int
    height: int
    format: OutputFormat
    media_type: str = Field(description="MIME type of data, e.g. image/png.")


class Timings(BaseModel):
    """Where the time went, in milliseconds."""

    queue_ms: float = Field(description="Waiting for a batch to start.")
    inference_ms: float = Field(description="The model call that produced the images.")
    encode_ms: float = Field(description="Encoding the images.")
    total_ms: float = Field(description="From submission to result.")


class GenerateResult(BaseModel):
    images: list[GeneratedImage]
    seed: int = Field(description="The request's seed (image i used seed + i).")
    model: str = Field(description="Id of the model that served the request.")
    batch_size: int = Field(description="Images in the model call that served this request.")
    timings: Timings


class BatchItemError(BaseModel):
    type: str
    message: str
    field: str | None = None


class BatchItem(BaseModel):
    """One entry of a /predict/batch response: a result or an error, never both."""

    result: GenerateResult | None = None
    error: BatchItemError | None = None


class BatchResponse(BaseModel):
    results: list[BatchItem]


class BatchRequest(BaseModel):
    """Body of POST /predict/batch: requests served concurrently, results in the same order."""

    model_config = ConfigDict(extra="forbid")

    requests: list[GenerateRequest] = Field(min_length=1, max_length=256)
