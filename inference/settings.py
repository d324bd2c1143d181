"""Typed settings read from environment variables: the only place the package reads env vars.

Every field has a working CPU default, so `python -m inference serve` runs with no configuration.
Names carry their units (``max_wait_ms``, ``request_timeout_s``) so a deployer never has to guess.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from inference import schema
from inference.adapters.spec import LORAS_MAX, LoraAdapter, parse_list

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

    # LoRA adapters (issue 16; inference/adapters/)
    lora_dir: Path | None = Field(
        None, description="Folder whose files requests may name as 'local:NAME' adapters."
    )
    lora_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated hosts adapter URLs may come from ('*': any public host); "
        "empty: URLs refused.",
    )
    lora_allow_private_urls: bool = Field(
        False,
        description="Allow adapter URLs that resolve to private or loopback addresses "
        "(tests, a registry inside your network).",
    )
    lora_download_dir: Path | None = Field(
        None,
        description="Where URL adapters are downloaded once (default: HF_HOME/lora-downloads, "
        "on Modal's weights Volume); hub adapters use the Hugging Face cache.",
    )
    lora_max_file_bytes: int = Field(
        512 * 1024**2, ge=1024, description="Larger adapter files are refused."
    )
    weights_url_max_bytes: int = Field(
        50 * 1024**3,
        ge=1024,
        description="Cog weights given as a URL (COG_WEIGHTS): larger downloads are refused.",
    )
    lora_cache_max_count: int = Field(
        8, ge=1, description="Adapters kept loaded at once; the least recently used is unloaded."
    )
    lora_cache_max_bytes: int = Field(
        2 * 1024**3, ge=1024, description="Adapter file bytes kept loaded at once."
    )
    max_loras: int = Field(
        3, ge=0, le=LORAS_MAX, description="Most adapters in one request (0: adapters off)."
    )
    default_loras: Annotated[list[LoraAdapter], NoDecode] = Field(
        default_factory=list,
        description="Adapters for requests that omit 'loras': comma-separated REF[:SCALE].",
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
        None,
        description="When set, /predict*, the predictions routes, /v1/images/generations and "
        "/metrics need 'Authorization: Bearer <token>'.",
    )
    image_url_ttl_s: float = Field(
        3600.0, gt=0, description="OpenAI response_format=url: how long an image URL works."
    )
    image_url_store_mb: float = Field(
        128.0,
        gt=0,
        description="OpenAI response_format=url: memory for images behind URLs; the oldest "
        "go first when it is full.",
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

    @field_validator("lora_allowed_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value

    @field_validator("default_loras", mode="before")
    @classmethod
    def _adapters_text(cls, value: object) -> object:
        return parse_list(value) if isinstance(value, str) else value

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

    public_url: str | None = Field(
        None,
        description="The base URL clients reach this server at (e.g. https://me-app.hf.space), "
        "for the URLs in prediction objects and OpenAI's response_format=url; unset: the "
        "request's own.",
    )

    # Predictions API (Replicate's and Cog's protocols): async jobs and webhooks
    predictions_max_count: int = Field(
        1000, ge=1, description="Predictions kept at once; beyond it creating one gets 503."
    )
    predictions_max_bytes: int = Field(
        512_000_000,
        ge=1_000_000,
        description="Bytes of inputs, logs and images kept at once (a running prediction "
        "reserves its images' raw size); beyond it creating one gets 503.",
    )
    predictions_ttl_s: float = Field(
        3600.0, gt=0, description="A finished prediction is forgotten this long after it ended."
    )
    predictions_wait_max_s: float = Field(
        60.0, gt=0, le=3600, description="Longest a create request with 'Prefer: wait' blocks."
    )
    predictions_output: Literal["data", "url"] = Field(
        "data",
        description="Prediction outputs as data: URIs, or as URLs this server serves (the "
        "replicate client reads https: URLs as files, so use 'url' behind TLS).",
    )
    webhook_secret: SecretStr | None = Field(
        None,
        description="'whsec_<base64 key>': webhooks are signed with it as Replicate signs "
        "them (Standard Webhooks); unset: sent unsigned, as Cog sends them.",
    )
    webhook_allowed_hosts: str = Field(
        "",
        description="Comma-separated host names accepted as webhook targets even though they "
        "resolve to loopback, private or link-local addresses (refused otherwise).",
    )
    webhook_timeout_s: float = Field(10.0, gt=0, le=300, description="One delivery attempt.")
    webhook_max_attempts: int = Field(
        5, ge=1, le=20, description="Tries of a 'completed' webhook (other events: one try)."
    )
    webhook_retry_backoff_s: float = Field(
        1.0, ge=0, le=60, description="Wait before the second try; doubles for each next one."
    )
    webhook_queue_size: int = Field(
        1000,
        ge=1,
        description="Webhook deliveries waiting at once; beyond it new ones are dropped.",
    )

    @field_validator("public_url", mode="before")
    @classmethod
    def _public_url(cls, value: object) -> object:
        """An empty variable means unset; a trailing slash would double the one in each path."""
        if not isinstance(value, str):
            return value
        value = value.rstrip("/")
        if not value:
            return None  # an empty Space variable means "not set"
        if not re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", value):
            raise ValueError("must be an http(s) base URL such as https://me-app.hf.space")
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
        if self.webhook_secret is not None:
            self.webhook_secret = _webhook_secret(self.webhook_secret.get_secret_value())
        return self

    @property
    def webhook_hosts(self) -> frozenset[str]:
        """WEBHOOK_ALLOWED_HOSTS as lower-case names."""
        return frozenset(
            h.strip().lower().strip("[]")
            for h in self.webhook_allowed_hosts.split(",")
            if h.strip()
        )

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


def _webhook_secret(value: str) -> SecretStr | None:
    """The secret if it is ``whsec_`` and base64 (what users' verification code decodes)."""
    if not value:
        return None  # WEBHOOK_SECRET="" means unsigned
    prefix, _, key = value.partition("_")
    try:
        decoded = base64.b64decode(key, validate=True)
    except ValueError:
        decoded = b""
    if prefix != "whsec" or len(decoded) < 16:
        raise ValueError(
            "WEBHOOK_SECRET must be 'whsec_' followed by a base64 key of at least 16 bytes, "
            'e.g. the output of: python -c "import base64, os; '
            "print('whsec_' + base64.b64encode(os.urandom(32)).decode())\""
        )
    return SecretStr(value)


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
