"""OpenAI's images API, its parameters: the bodies of POST /v1/images/generations (JSON) and
POST /v1/images/edits (multipart), and their translation into our request. Nothing here
validates what the service validates.

Parameters, as the official ``openai`` client sends them:

- translated: ``prompt``; ``n`` -> ``num_outputs``; ``size`` "WxH" -> ``width``/``height``
  ("auto" or none: the model's default); ``output_format``.
- this protocol's own, checked here: ``response_format`` (``b64_json`` by default, or ``url``),
  ``stream`` and ``partial_images`` (0-3), ``background`` (``auto``/``opaque``; this server
  draws no transparency, so ``transparent`` is refused).
- ``output_compression`` (0-100) is the JPEG or WebP quality, as OpenAI's is (100: the
  largest, best file); omitted, this server's own (``codec.LOSSY_QUALITY``). The model's
  images are asked for as lossless PNG and re-encoded here at that quality, so the result
  cache holds one entry whatever the quality. PNG ignores it: OpenAI applies it to jpeg and
  webp only.
- routing: ``model`` selects the model (a name ``GET /v1/models`` lists, or ``name@version``;
  without a registry any name is the one model); ``user`` or ``safety_identifier`` keeps an
  end user on one version while weights stand (echoed as ``safety_identifier``, as OpenAI does).
- accepted and ignored: ``quality``, ``style``, ``moderation``, ``complexity``.
- not supported, refused naming the parameter (``UNSUPPORTED``): what the client knows for
  other kinds of output than still raster images (``frame_count``, ``frame_duration_ms``,
  ``svg``, ``markup``).
- extensions (send them with the client's ``extra_body``): ``seed``, ``negative_prompt``,
  ``steps``, ``prompt_weight``, ``scheduler``, as in ``POST /predict``.
- edits: one ``image`` (or ``image[]``) file; ``mask``, OpenAI's (fully transparent pixels are
  repainted), turned into ours (white repaints); ``strength`` as an extension;
  ``input_fidelity`` accepted and ignored. Several images (the client sends up to 16, which
  OpenAI's models compose into one picture) are refused (``ONE_IMAGE``): a diffusion
  image-to-image model starts its denoising from one init image, so any choice among them, or
  a blend, would be a guess the caller did not make.

An unknown parameter is refused, as OpenAI refuses it, rather than silently dropped.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from inference import codec
from inference.http.forms import INTEGER, typed
from inference.http.protocols.openai.shapes import OpenAIError
from inference.settings import Settings
from inference.validation import describe_errors

P = TypeVar("P", bound="GenerationParams")
#: Parameters that are file uploads (on the edits route).
FILE_PARAMS = ("image", "mask")
#: Our request fields sent under the same name (through ``extra_body``).
EXTENSIONS = ("seed", "negative_prompt", "steps", "prompt_weight", "scheduler")
SIZE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")
#: Parameters the official client (openai 3.63) sends for output this server cannot make:
#: animations (``frame_count``, ``frame_duration_ms``) and vector images (``svg``, ``markup``).
UNSUPPORTED = ("frame_count", "frame_duration_ms", "svg", "markup")
#: Formats whose quality ``output_compression`` sets.
LOSSY = ("jpeg", "webp")
#: Why an edit takes one image; the client allows 16, so the refusal must say why.
ONE_IMAGE = (
    "this server edits one image per request, got {count}: its diffusion model starts "
    "image-to-image from one init image and cannot compose several into one picture; send "
    "one image"
)
#: Parameters whose form text is an integer.
INTEGER_PARAMS = ("n", "partial_images", "output_compression")


class GenerationParams(BaseModel):
    """The body of POST /v1/images/generations."""

    model_config = ConfigDict(extra="forbid")

    prompt: Any = Field(description="What to draw (our `prompt`).")
    n: Any = Field(None, description="Images to generate (our `num_outputs`).")
    size: str | None = Field(None, description="'WIDTHxHEIGHT' or 'auto' (the model's own).")
    output_format: Any = Field(None, description="png, jpeg or webp.")
    response_format: Literal["b64_json", "url"] | None = None
    stream: StrictBool | None = False
    partial_images: int | None = Field(None, ge=0, le=3)

    output_compression: int | None = Field(
        None, ge=0, le=100, description="JPEG or WebP quality, 0-100; png ignores it."
    )

    @field_validator("partial_images", "output_compression", mode="before")
    @classmethod
    def _a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """JSON numbers only: ``true`` is not 1, ``"2"`` is not 2 (``2.0`` is 2)."""
        if isinstance(value, bool | str):
            span = {"partial_images": "0 to 3", "output_compression": "0 to 100"}
            name = str(info.field_name)
            raise ValueError(f"{name} must be an integer from {span[name]}, got {value!r}")
        return value

    background: Literal["auto", "opaque"] | None = None
    model: str | None = Field(
        None,
        description="The model: a name GET /v1/models lists, or name@version to pin a version; "
        "without a registry any name is the one model served.",
    )
    user: str | None = None
    safety_identifier: str | None = None
    quality: Any = None
    style: Any = None
    moderation: Any = None
    complexity: Any = None
    seed: Any = None
    negative_prompt: Any = None
    steps: Any = None
    prompt_weight: Any = None
    scheduler: Any = None

    def native(self) -> dict[str, Any]:
        """Our request fields; the service validates them (and names what is wrong)."""
        request: dict[str, Any] = {"prompt": self.prompt}
        if self.n is not None:
            request["num_outputs"] = self.n
        if self.output_format is not None:
            request["output_format"] = "png" if self.recompressed else self.output_format
        if self.size not in (None, "auto"):
            match = SIZE.fullmatch(self.size or "")
            if match is None:
                raise OpenAIError(
                    400,
                    f"size must be 'WIDTHxHEIGHT' (e.g. '512x512') or 'auto', got {self.size!r}",
                    param="size",
                    code="invalid_size",
                )
            request["width"], request["height"] = int(match[1]), int(match[2])
        for name in EXTENSIONS:
            value = getattr(self, name)
            if value is not None:
                request[name] = value
        return request

    @property
    def recompressed(self) -> tuple[str, int] | None:
        """(format, quality) when the images are re-encoded here at ``output_compression``
        from the model's PNG; None when the service's own encoding is the answer."""
        fmt, quality = self.output_format, self.output_compression
        if quality is None or fmt not in LOSSY or quality == codec.LOSSY_QUALITY:
            return None
        return fmt, quality

    @property
    def identifier(self) -> str | None:
        """``safety_identifier``, or the deprecated ``user`` (OpenAI's rule)."""
        return self.safety_identifier or self.user or None


class EditParams(GenerationParams):
    """The parts of POST /v1/images/edits (multipart/form-data, as the client sends them)."""

    image: bytes = Field(description="The image to edit: one file.")
    mask: bytes | None = Field(
        None,
        description="A PNG of the image's size whose fully transparent pixels are repainted.",
    )
    input_fidelity: Any = None
    strength: Any = None

    def native_edit(self, settings: Settings) -> dict[str, Any]:
        """Our request: the image, and OpenAI's mask as ours (decodes both: off the loop)."""
        request = {**self.native(), "image": self.image}
        mask = openai_mask(self.image, self.mask, settings)
        if mask is not None:
            request["mask"] = mask
        if self.strength is not None:
            request["strength"] = self.strength
        return request


def openai_mask(image: bytes, mask: bytes | None, settings: Settings) -> bytes | None:
    """OpenAI's mask in our convention (white repaints), as a PNG; None to edit everything.

    OpenAI repaints the mask's fully transparent pixels; without a mask, the image's own
    fully transparent pixels (DALL-E 2's rule), and where it has none, the whole image
    (image-to-image). A mask with no alpha channel marks nothing, so it is refused.
    """
    from PIL import Image

    from inference.images import transparent_area

    if mask is None:
        area = transparent_area(image, "image", settings)
        if area is None or not area.any():
            return None
    else:
        area = transparent_area(mask, "mask", settings)
        if area is None:
            raise OpenAIError(
                400,
                "mask has no alpha channel: its fully transparent pixels mark the area to "
                "edit; send a PNG with transparency (or leave mask out to edit the whole image)",
                param="mask",
                code="invalid_value",
            )
    encoded = io.BytesIO()
    Image.fromarray(area, mode="L").save(encoded, format="PNG", compress_level=1)
    return encoded.getvalue()


def parse_params(raw: bytes) -> GenerationParams:
    """The parameters in ``raw``, or a 400 naming the first bad one."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise OpenAIError(400, f"the body is not valid JSON ({exc}); send a JSON object") from None
    if not isinstance(body, dict):
        raise OpenAIError(400, "the body must be a JSON object of parameters")
    return _validated(GenerationParams, body)


def parse_edit(parts: list[tuple[str, str | bytes]]) -> EditParams:
    """The parameters in a multipart body's parts, or a 400 naming the first bad one.

    The client sends a list of images as ``image[]`` parts; this server edits one image, so
    more than one is refused rather than all but one dropped. Text parts are typed as the
    JSON body's values would be (``n=2``, ``stream=true``).
    """
    body: dict[str, Any] = {}
    images = [value for name, value in parts if name in ("image", "image[]")]
    if len(images) > 1:
        raise OpenAIError(400, ONE_IMAGE.format(count=len(images)), param="image")
    for name, value in parts:
        if name.split("[")[0] in UNSUPPORTED:  # the client sends an object as svg[max_paths]
            _decline(name.split("[")[0])
        key = "image" if name == "image[]" else name
        if key in body:
            raise OpenAIError(400, f"{key} is given more than once; send it once", param=key)
        if key in FILE_PARAMS and isinstance(value, str):
            raise OpenAIError(400, f"{key} must be a file upload (multipart), not text", param=key)
        body[key] = _form_value(key, value) if isinstance(value, str) else value
    return _validated(EditParams, body)


def _form_value(name: str, text: str) -> Any:
    """A form part's text as the JSON value it stands for, where its parameter is typed."""
    if name in INTEGER_PARAMS and INTEGER.match(text):
        return int(text)
    if name == "stream":
        return {"true": True, "false": False}.get(text, text)
    return typed(name, text)


def _decline(name: str) -> None:
    """Refuse a parameter of ``UNSUPPORTED``: it is OpenAI's, just not this server's."""
    raise OpenAIError(
        400,
        f"{name} is not supported by this server: it generates still raster images (png, "
        f"jpeg or webp) with a diffusion model; leave {name} out",
        param=name,
        code="unsupported_parameter",
    )


def _validated(kind: type[P], body: dict[str, Any]) -> P:
    for name in UNSUPPORTED:
        if body.get(name) is not None:
            _decline(name)
    try:
        return kind.model_validate(body)
    except ValidationError as exc:
        first = describe_errors(exc.errors())[0]
        message = first["message"]
        if exc.errors()[0]["type"] == "extra_forbidden":
            message = f"Unknown parameter: '{first['field']}'."
        raise OpenAIError(400, message, param=first["field"].split(".")[0]) from None
