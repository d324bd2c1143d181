"""The request and result schema: the single source of truth for every runtime.

``GenerateRequest`` carries the hard bounds that no deployment may exceed; a deployment tightens
them through settings (``Limits``) and fills omitted fields from the model's defaults
(``Defaults``). ``inference.validation`` applies both and returns a ``Job``: a request with every
value fixed, including the seed of each image, which is what models see.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

if TYPE_CHECKING:  # numpy loads with the models: the schema must import fast
    import numpy as np
from inference.lora_spec import LORAS_MAX, LoraAdapter

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
#: ``strength`` when a request with an image omits it (Replicate's prompt_strength default).
DEFAULT_STRENGTH = 0.8
#: Request fields that carry an image file; every front door offers them as file inputs.
IMAGE_FIELDS = ("image", "mask")
OutputFormat = Literal["png", "jpeg", "webp"]
#: Sampler choices for diffusers models (the mock model has one sampler and ignores this).
Scheduler = Literal[
    "ddim", "ddpm", "dpm++", "dpm++_karras", "euler", "euler_a", "heun", "lms", "pndm", "unipc"
]


def decode_base64(text: str) -> bytes:
    """Base64 ``text`` (whitespace anywhere is dropped) as bytes.

    pybase64 decodes text without whitespace in ~2 ms where ``base64`` and the whitespace pass
    take ~45 ms for a 7 MB image, one call each that holds the GIL (the event loop waits that
    long although the decode runs in a worker thread); whatever pybase64 refuses goes the
    standard way, which decides (a test compares the two on every short input).
    """
    import pybase64

    try:
        return pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return base64.b64decode("".join(text.split()), validate=True)


def image_input(value: Any, info: ValidationInfo) -> bytes | str:
    """An image field's value as the file's bytes, or an http(s) URL left for the server to
    fetch (only where INPUT_URL_HOSTS allows it: that needs settings, so validation does it).

    JSON carries base64 or a ``data:`` URI; Python callers (Modal, Cog, multipart uploads, the
    UI) hand over the bytes themselves. Decoding the image is left to ``inference.images``.
    """
    name = info.field_name
    how = (
        f"send base64, a data: URI (data:image/png;base64,...) or, as a file, "
        f"multipart/form-data (curl -F {name}=@photo.png)"
    )
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    elif isinstance(value, str):
        text = value.strip()
        if text[:8].lower().startswith(("http://", "https://")):
            return text
        if text[:5].lower() == "data:":
            header, comma, text = text.partition(",")
            if not comma or not header.lower().endswith(";base64"):
                raise ValueError(f"{name}: a data: URI must be base64-encoded; {how}")
        try:
            data = decode_base64(text)
        except (binascii.Error, ValueError):
            shown = f"{text[:20]!r}..." if len(text) > 20 else repr(text)
            raise ValueError(f"{name} is not base64 image data (got {shown}); {how}") from None
    else:
        raise ValueError(f"{name} must be an image file, got {type(value).__name__}; {how}")
    if not data:
        raise ValueError(f"{name} is empty (0 bytes); send an image file or omit {name}")
    return data


ImageInput = Annotated[
    bytes | str,
    BeforeValidator(image_input),
    PlainSerializer(
        lambda v: base64.b64encode(v).decode("ascii") if isinstance(v, bytes) else v,
        when_used="json",
    ),
    WithJsonSchema({"type": "string"}),
]


class GenerateRequest(BaseModel):
    """One request: text-to-image, or image-to-image / inpainting when it carries an image.
    Omitted fields take the served model's defaults.

    Numbers must be JSON numbers: a boolean or a string is refused (``{"seed": true}`` or
    ``{"seed": "12"}`` is not silently read as 1 or 12); ``2.0`` is the integer 2, as in JSON
    Schema.
    """

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: Any, info: Any) -> Any:
        kinds = set(get_args(cls.model_fields[info.field_name].annotation)) or {
            cls.model_fields[info.field_name].annotation
        }
        if isinstance(value, bool | str) and kinds & {int, float}:
            kind = "an integer" if int in kinds else "a number"
            raise ValueError(f"{info.field_name} must be {kind}, got {json.dumps(value)[:40]}")
        return value

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
        json_schema_extra={"multipleOf": SIDE_MULTIPLE},
    )
    height: int | None = Field(
        None,
        ge=SIDE_MIN,
        le=SIDE_MAX,
        description="Image height in pixels, a multiple of 8; omit for the model's default.",
        json_schema_extra={"multipleOf": SIDE_MULTIPLE},
    )
    num_outputs: int = Field(1, ge=1, le=NUM_OUTPUTS_MAX, description="Images to generate.")
    output_format: OutputFormat = Field("png", description="Encoding of the returned images.")
    scheduler: Scheduler | None = Field(
        None, description="Sampler for diffusers models; omit for the model's own."
    )
    image: ImageInput | None = Field(
        None,
        description="Init image for image-to-image or inpainting (Replicate: image): base64 or "
        "a data: URI in JSON, a file in multipart. Omit for text-to-image. Resized to "
        "width x height (cover, centre crop); without width and height, its own size.",
    )
    mask: ImageInput | None = Field(
        None,
        description="Inpainting mask, the image's size (Replicate: mask): white repaints, "
        "black keeps (transparent counts as black). Needs image.",
    )
    strength: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        validation_alias=AliasChoices("strength", "prompt_strength"),
        description="How far to move away from the image (Replicate: prompt_strength, also "
        "accepted): 0 keeps it, 1 ignores it. Needs image; omit for 0.8.",
    )
    # LoRA adapters (issue 16): the type lives in inference/lora_spec.py.
    loras: list[LoraAdapter] | None = Field(
        None,
        max_length=LORAS_MAX,
        description="LoRA adapters to apply, each a reference and a scale; omit for the "
        "server's default adapters (DEFAULT_LORAS), [] for none.",
    )

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, value: int | None, info: Any) -> int | None:
        if value is not None:
            check_side(info.field_name, value)
        return value


def check_side(name: str, value: int) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is a multiple of 8, with the two
    nearest sizes that are (used by the schema and by the DEFAULT_* settings)."""
    if value % SIDE_MULTIPLE:
        lower = value - value % SIDE_MULTIPLE
        raise ValueError(
            f"{name} must be a multiple of {SIDE_MULTIPLE}, got {value} "
            f"(try {max(lower, SIDE_MIN)} or {lower + SIDE_MULTIPLE})"
        )


class RoutedRequest(GenerateRequest):
    """A request that may name the model serving it: the native API's body (POST /predict and
    each item of /predict/batch). The field lives here, not on ``GenerateRequest``, because
    which model serves a request is decided before validation (each version validates with its
    own limits) and the front doors that serve one model per process (Cog, the UI, a batch
    job) have nothing to choose."""

    model: str | None = Field(
        None,
        max_length=200,
        description="The model to serve this request: a name GET /admin/models or GET "
        "/v1/models lists, or name@version to pin a version; omit for the default model. "
        "Without a registry (MODELS_FILE) every name is the one model.",
    )


@dataclass(frozen=True)
class Defaults:
    """Values used for fields a request omits; the model supplies them, settings may override."""

    steps: int
    prompt_weight: float
    width: int
    height: int
    #: Only for requests with an image.
    strength: float = DEFAULT_STRENGTH


@dataclass(frozen=True)
class Limits:
    """A deployment's bounds, at most the schema's hard bounds."""

    max_steps: int = 100
    max_width: int = 1024
    max_height: int = 1024
    max_pixels: int = 1024 * 1024
    #: Images in one request; MAX_BATCH_SIZE (the most images in one model call) bounds it.
    max_outputs: int = NUM_OUTPUTS_MAX


Mode = Literal["text-to-image", "image-to-image", "inpainting"]


@dataclass(frozen=True)
class Picture:
    """Pixels a request brought, decoded and brought to the job's size, with their SHA-256.

    Compared and hashed by the digest alone, so a ``Job`` stays hashable and two jobs with the
    same pixels are equal. ``pixels`` is HxWx3 uint8 for an image, HxW uint8 (255 repaint,
    0 keep) for a mask.
    """

    pixels: np.ndarray = field(compare=False, repr=False)
    digest: str

    @classmethod
    def of(cls, pixels: np.ndarray) -> Picture:
        content = hashlib.sha256(repr(pixels.shape).encode())
        content.update(pixels.tobytes())
        return cls(pixels, content.hexdigest())


@dataclass(frozen=True, kw_only=True)
class Job:
    """A fully resolved request: what a model generates from. ``seeds`` has one per image.

    Built only by ``inference.validation`` (and by keyword), so every field has passed the
    schema, this deployment's limits and the model's own ``check``.
    """

    prompt: str
    negative_prompt: str
    seeds: tuple[int, ...]
    prompt_weight: float
    steps: int
    width: int
    height: int
    output_format: OutputFormat
    scheduler: Scheduler | None = None
    #: Set together: an init image of exactly width x height, and how far to move from it.
    image: Picture | None = None
    strength: float | None = None
    #: Only with an image: which of its pixels to repaint.
    mask: Picture | None = None
    #: The request gave no seed, so the server drew one. Not part of what is generated (left
    #: out of equality): it only tells the result cache that nobody can ask for this job again.
    seed_drawn: bool = field(default=False, compare=False)
    #: Adapters in request order; part of every backend's ``batch_key``.
    loras: tuple[LoraAdapter, ...] = ()

    @property
    def num_outputs(self) -> int:
        return len(self.seeds)

    @property
    def mode(self) -> Mode:
        if self.image is None:
            return "text-to-image"
        return "image-to-image" if self.mask is None else "inpainting"


def random_seed() -> int:
    return secrets.randbelow(SEED_MAX + 1)
