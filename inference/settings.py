"""Typed settings read from environment variables: the only place the package reads env vars.

Every field has a working CPU default, so `python -m inference serve` runs with no configuration.
Names carry their units (``max_wait_ms``, ``request_timeout_s``) so a deployer never has to guess.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from inference import schema
from inference.settings_inputs import InputSettings
from inference.settings_jobs import JobSettings


class Settings(BaseSettings, InputSettings, JobSettings):
    """Deployment settings; each field is read from the upper-cased env var of the same name.

    The fields of what requests may bring in (images, LoRA adapters) and of the predictions API
    (jobs, webhooks, served image URLs) are declared in ``settings_inputs`` and
    ``settings_jobs``; they are settings like the others."""

    # hide_input_in_errors: an error elsewhere must never print AUTH_TOKEN or HF_TOKEN.
    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", hide_input_in_errors=True
    )

    # Model
    model: str = Field(
        "mock",
        description="'mock' (embedded), a local diffusers folder, a Hugging Face hub id, or "
        "your own class as 'package.module:ClassName' (or the name of an entry point in the "
        "'diffusion_serve.models' group).",
    )
    model_revision: str | None = Field(
        None, description="Hub revision (commit hash or tag) to pin a hub model to."
    )
    weights_path: Path | None = Field(
        None,
        description="The mock model's JSON or safetensors file with 'gamma' and 'beta'; for "
        "your own class, whatever file or folder it reads (it gets these settings).",
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
    safety_checker: Literal["keep", "disable"] = Field(
        "keep",
        description="Diffusers models that ship a safety checker (SD 1.x): keep it (flagged "
        "images come back black with nsfw=true) or disable it. The deployment's decision.",
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
    result_cache_mb: float = Field(
        64.0,
        ge=0,
        description="Memory for results of requests that give a seed (LRU, counted in encoded "
        "image bytes); 0 turns the cache off.",
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

    # Defaults for omitted request fields; unset means the model's own default.
    default_steps: int | None = Field(None, ge=1, le=schema.STEPS_MAX)
    default_prompt_weight: float | None = Field(
        None, ge=schema.PROMPT_WEIGHT_MIN, le=schema.PROMPT_WEIGHT_MAX
    )
    default_width: int | None = Field(None, ge=schema.SIDE_MIN, le=schema.SIDE_MAX)
    default_height: int | None = Field(None, ge=schema.SIDE_MIN, le=schema.SIDE_MAX)

    # HTTP server
    auth_token: SecretStr | None = Field(
        None,
        description="When set, /predict*, the predictions routes, /v1/images/generations and "
        "/metrics need 'Authorization: Bearer <token>'.",
    )
    ui: bool = Field(
        True, description="Serve the Gradio UI at /ui (needs the 'ui' extra); false skips it."
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_grace_s: float = Field(
        25.0,
        ge=0,
        le=3600,
        description="On SIGTERM, how long queued and running requests may finish before they "
        "fail with 503 (new ones get 503 at once).",
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="Open connections and requests uvicorn serves at once; beyond, it answers "
        "503. Bounds the file descriptors slow or half-sent requests can hold.",
    )
    rate_limit_per_minute: int = Field(
        0,
        ge=0,
        description="Requests per minute each client may make to the protected routes "
        "(/predict*, /metrics): 429 with Retry-After beyond; 0 turns the limit off.",
    )
    rate_limit_burst: int = Field(
        10, ge=1, description="Requests a client may make at once before the rate applies."
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated addresses or networks (CIDR) of proxies whose "
        "X-Forwarded-For names the client (a Space's or Modal's proxy); others are ignored.",
    )
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated origins whose browser apps may call the API (CORS); "
        "none by default, '*' for any.",
    )

    @field_validator("trusted_proxies", "cors_allow_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network; use e.g. 10.0.0.0/8"
                ) from None
        return value

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
        if self.max_loras > self.lora_cache_max_count:
            raise ValueError(
                f"MAX_LORAS={self.max_loras} exceeds LORA_CACHE_MAX_COUNT="
                f"{self.lora_cache_max_count}: one request's adapters must fit the cache; "
                "lower MAX_LORAS or raise LORA_CACHE_MAX_COUNT"
            )
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
