"""What the server answers: encoded images, where the time went, and the batch route's body.

The request side (``GenerateRequest``, ``Job``) is in ``inference.schema``.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from inference.errors import ContentFlagged
from inference.schema import OutputFormat

#: What Replicate's own Stable Diffusion models (cog-sdxl) fail with when the safety checker
#: flagged every output; their clients may match on it.
ALL_FLAGGED = "NSFW content detected. Try running it again, or try a different prompt."


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
    nsfw: bool | None = Field(
        None,
        description="True: the model's safety checker flagged this image and it was blacked "
        "out; false: it passed; null: no safety checker ran.",
    )


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
    version: str | None = Field(
        None,
        description="The registry version that served it, as model@version (which pins it); "
        "the X-Model-Version header on /predict says the same.",
    )
    batch_size: int = Field(description="Images in the model call that served this request.")
    timings: Timings
    cache: Literal["hit", "miss"] | None = Field(
        None,
        description="hit: served from the result cache (or from an identical request computed "
        "at the same time); miss: computed and cached; null: not cacheable (no seed given, or "
        "RESULT_CACHE_MB=0).",
    )


def unflagged(result: GenerateResult) -> list[tuple[int, GeneratedImage]]:
    """The result policy of the protocols whose clients expect no blacked-out image (Cog,
    Replicate, OpenAI): the images the safety checker passed, each with its index in the
    result. Raises ``ContentFlagged`` when it flagged every one. The native API, the UI, batch
    jobs and the CLI keep every image and say which were flagged (``nsfw``) instead; the table
    "Result policy" in docs/architecture.md has every protocol's rendering."""
    kept = [(i, image) for i, image in enumerate(result.images) if not image.nsfw]
    if not kept:
        raise ContentFlagged(ALL_FLAGGED, len(result.images))
    return kept


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
    """Body of POST /predict/batch: requests served concurrently, results in the same order.

    Each item is validated on its own (by the service), so one bad item is one item's error,
    whether it breaks the schema or a limit of this server; the others are served.
    """

    model_config = ConfigDict(extra="forbid")

    requests: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=256,
        description="Objects of GenerateRequest fields. Each is validated on its own: an item "
        "that breaks the schema or a limit gets its own error in the results.",
    )
