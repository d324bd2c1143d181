"""Settings that tighten the schema's hard bounds for this deployment, and the defaults for
omitted request fields (which must lie within them)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator

from inference import schema


def _default_side(side: str) -> Any:
    """DEFAULT_WIDTH and DEFAULT_HEIGHT: one rule for both sides, so they cannot drift apart."""
    return Field(
        None,
        ge=schema.SIDE_MIN,
        le=schema.SIDE_MAX,
        description=f"{side} for requests that omit it; unset: the model's native size (at most "
        f"MAX_{side.upper()}, a multiple of 8).",
    )


class LimitSettings(BaseModel):
    """MAX_STEPS, MAX_WIDTH, MAX_HEIGHT, MAX_PIXELS, MAX_BATCH_REQUESTS, MAX_BODY_BYTES and
    DEFAULT_*."""

    max_steps: int = Field(
        100,
        ge=1,
        le=schema.STEPS_MAX,
        description="Most denoising steps a request may ask for (the schema allows up to 150).",
    )
    max_width: int = Field(
        1024,
        ge=schema.SIDE_MIN,
        le=schema.SIDE_MAX,
        description="Widest image a request may ask for, in pixels.",
    )
    max_height: int = Field(
        1024,
        ge=schema.SIDE_MIN,
        le=schema.SIDE_MAX,
        description="Tallest image a request may ask for, in pixels.",
    )
    max_pixels: int = Field(
        1024 * 1024,
        ge=schema.SIDE_MIN**2,
        le=schema.SIDE_MAX**2,
        description="Most pixels (width x height) of one image a request may ask for.",
    )
    max_batch_requests: int = Field(
        16, ge=1, le=256, description="Most requests in one POST /predict/batch."
    )
    max_body_bytes: int = Field(
        1_000_000,
        ge=1024,
        description="Larger request bodies are refused with 413 (bodies that may carry images "
        "get room for two images of MAX_IMAGE_BYTES on top).",
    )

    # Defaults for omitted request fields; unset means the model's own default.
    default_steps: int | None = Field(
        None,
        ge=1,
        le=schema.STEPS_MAX,
        description="steps for requests that omit it; unset: the model's own (at most MAX_STEPS).",
    )
    default_prompt_weight: float | None = Field(
        None,
        ge=schema.PROMPT_WEIGHT_MIN,
        le=schema.PROMPT_WEIGHT_MAX,
        description="prompt_weight for requests that omit it; unset: the model's own guidance.",
    )
    default_width: int | None = _default_side("width")
    default_height: int | None = _default_side("height")

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> LimitSettings:
        for name, limit in (
            ("default_steps", "max_steps"),
            ("default_width", "max_width"),
            ("default_height", "max_height"),
        ):
            value = getattr(self, name)
            if value is not None and value > getattr(self, limit):
                raise ValueError(
                    f"{name.upper()}={value} exceeds {limit.upper()}={getattr(self, limit)}; "
                    f"lower {name.upper()} or raise {limit.upper()}"
                )
        for name in ("default_width", "default_height"):
            value = getattr(self, name)
            if value is not None:
                schema.check_side(name.upper(), value)
        return self
