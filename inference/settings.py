"""Typed settings read from environment variables: the only place the package reads env vars.

Every field has a working CPU default, so `python -m inference serve` runs with no configuration.
Names carry their units (``max_wait_ms``, ``request_timeout_s``) so a deployer never has to guess.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from inference import schema

#: Pillow's own decompression-bomb threshold (``PIL.Image.MAX_IMAGE_PIXELS``): above it Pillow
#: warns, and refuses at twice it, before our check could name the setting.
PILLOW_BOMB_PIXELS = 89_478_485


class Settings(BaseSettings):
    """Deployment settings; each field is read from the upper-cased env var of the same name."""

    # hide_input_in_errors: an error elsewhere must never print AUTH_TOKEN or HF_TOKEN.
    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", hide_input_in_errors=True
    )

    # Model
    model: str = Field(
        "mock",
        description="'mock' (embedded), a local diffusers folder, or a Hugging Face hub id.",
    )
    model_revision: str | None = Field(
        None, description="Hub revision (commit hash or tag) to pin a hub model to."
    )
    weights_path: Path | None = Field(
        None, description="Mock model only: a JSON or safetensors file with 'gamma' and 'beta'."
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="Where the model runs; 'auto' picks cuda, then mps, then cpu."
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto",
        description="Diffusers models: weight dtype; 'auto' is bfloat16 on CUDA GPUs that "
        "support it, else float16 on a GPU, float32 on CPU.",
    )
    scheduler: schema.Scheduler | None = Field(
        None,
        description="Diffusers models: the sampler for requests that name none; unset keeps "
        "the model's own.",
    )
    torch_compile: bool = Field(
        False,
        description="Diffusers models on CUDA: torch.compile the denoiser (slower start, faster "
        "steps; each new batch size compiles once).",
    )
    channels_last: bool = Field(
        False, description="Diffusers models on CUDA: channels_last memory format for UNet/VAE."
    )
    hf_hub_offline: bool = Field(
        False,
        description="Never contact the Hugging Face Hub: hub models load from the local cache "
        "only.",
    )

    # Dynamic batching and back-pressure
    max_batch_size: int = Field(8, ge=1, le=256, description="Most images in one model call.")
    max_wait_ms: float = Field(
        10.0, ge=0, le=10_000, description="Longest a request waits for batch company."
    )
    max_queue_size: int = Field(
        64, ge=1, description="Requests waiting beyond this are refused with 503."
    )
    request_timeout_s: float = Field(
        120.0, gt=0, description="A request not finished by then fails with 504."
    )

    # Request limits (tighten the schema's hard bounds for this deployment)
    max_steps: int = Field(100, ge=1, le=schema.STEPS_MAX)
    max_width: int = Field(1024, ge=schema.SIDE_MIN, le=schema.SIDE_MAX)
    max_height: int = Field(1024, ge=schema.SIDE_MIN, le=schema.SIDE_MAX)
    max_pixels: int = Field(1024 * 1024, ge=schema.SIDE_MIN**2, le=schema.SIDE_MAX**2)
    max_batch_requests: int = Field(
        16, ge=1, le=256, description="Most requests in one POST /predict/batch."
    )
    max_body_bytes: int = Field(
        1_000_000,
        ge=1024,
        description="Larger request bodies are refused with 413 (bodies that may carry images "
        "get room for two images of MAX_IMAGE_BYTES on top).",
    )

    # Image inputs (image-to-image, inpainting)
    max_image_bytes: int = Field(
        10_000_000,
        ge=1024,
        description="Largest image file (image or mask) a request may carry, however it is "
        "sent; larger ones are refused with 413.",
    )
    max_image_pixels: int = Field(
        25_000_000,
        ge=schema.SIDE_MIN**2,
        le=PILLOW_BOMB_PIXELS,
        description="Most pixels an image may have, read from its header before it is decoded "
        "(a few-KB file can hold billions of pixels); at most Pillow's own bomb limit.",
    )
    image_url_hosts: str = Field(
        "",
        description="Comma-separated hosts that image fields may be fetched from as http(s) "
        "URLs ('*.example.com' matches subdomains, '*' any host); empty: URLs are refused.",
    )
    image_url_timeout_s: float = Field(
        10.0, gt=0, le=300, description="Fetching one image URL takes at most this long."
    )
    image_url_allow_private: bool = Field(
        False,
        description="Fetch image URLs that resolve to private, loopback or link-local "
        "addresses (checked after DNS resolution); off by default.",
    )

    # Defaults for omitted request fields; unset means the model's own default.
    default_steps: int | None = Field(None, ge=1, le=schema.STEPS_MAX)
    default_prompt_weight: float | None = Field(
        None, ge=schema.PROMPT_WEIGHT_MIN, le=schema.PROMPT_WEIGHT_MAX
    )
    default_width: int | None = Field(None, ge=schema.SIDE_MIN, le=schema.SIDE_MAX)
    default_height: int | None = Field(None, ge=schema.SIDE_MIN, le=schema.SIDE_MAX)

    # HTTP server
    auth_token: SecretStr | None = Field(
        None, description="When set, /predict* and /metrics need 'Authorization: Bearer <token>'."
    )
    ui: bool = Field(
        True, description="Serve the Gradio UI at /ui (needs the 'ui' extra); false skips it."
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _defaults_within_limits(self) -> Settings:
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
        if self.torch_compile and self.device in ("cpu", "mps"):
            raise ValueError(
                f"TORCH_COMPILE=1 needs a CUDA GPU, but DEVICE={self.device}; "
                "unset TORCH_COMPILE or use DEVICE=cuda (or auto)"
            )
        if self.auth_token is not None and not self.auth_token.get_secret_value():
            self.auth_token = None  # AUTH_TOKEN="" means auth off, not "the empty token"
        if self.model_revision == "":
            self.model_revision = None  # an empty Space variable means "no pin", not revision ""
        return self

    @property
    def url_hosts(self) -> tuple[str, ...]:
        """IMAGE_URL_HOSTS as lower-case host patterns."""
        return tuple(h.strip().lower() for h in self.image_url_hosts.split(",") if h.strip())

    @property
    def max_image_body_bytes(self) -> int:
        """The body limit of routes whose requests may carry images: MAX_BODY_BYTES plus an
        image and a mask of MAX_IMAGE_BYTES each, base64-encoded (4 bytes per 3) in JSON."""
        return self.max_body_bytes + 2 * (4 * -(-self.max_image_bytes // 3) + 1024)

    @property
    def limits(self) -> schema.Limits:
        return schema.Limits(
            max_steps=self.max_steps,
            max_width=self.max_width,
            max_height=self.max_height,
            max_pixels=self.max_pixels,
            max_outputs=min(schema.NUM_OUTPUTS_MAX, self.max_batch_size),
        )


def describe_settings_errors(exc: ValidationError, prefix: str = "") -> list[str]:
    """Each problem as ``NAME=value: why``, named as the env var a deployer sets.

    Values of secret fields are masked, and a problem of the whole configuration (two settings
    that disagree) is its own message, never a dump of every setting.
    """
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:
            problems.append(message)
            continue
        name = str(error["loc"][0])
        value = "***" if "token" in name or "secret" in name else error.get("input")
        problems.append(f"{prefix}{name.upper()}={value}: {message}")
    return problems


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once. Tests call ``get_settings.cache_clear()``."""
    return Settings()
