"""Settings of the predictions API (Replicate's and Cog's protocols), its webhooks, and the
image URLs the OpenAI route serves."""

from __future__ import annotations

import base64
import re
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator

from inference.hosts import HostList


class PredictionSettings(BaseModel):
    """PUBLIC_URL, PREDICTIONS_*, WEBHOOK_*, FILES_*, IMAGE_LINK_TTL_S and IMAGE_LINK_STORE_MB."""

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
    webhook_allowed_hosts: HostList = Field(
        default_factory=HostList,
        description="Comma-separated host names accepted as webhook targets even though they "
        "resolve to loopback, private or link-local addresses (refused otherwise); "
        "'*.example.com' matches subdomains.",
    )
    webhook_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="One delivery attempt takes at most this long in all (lookup, connect, "
        "sending, the answer's headers).",
    )
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
    webhook_queue_max_bytes: int = Field(
        256_000_000,
        ge=1,
        description="Bytes of webhook bodies held at once by deliveries that are queued, being "
        "posted or waiting to retry. Each body is the whole prediction, with every output as a "
        "data: URI when outputs are not URLs (about 16 MB for four 1024x1024 PNGs), so this, "
        "not WEBHOOK_QUEUE_SIZE, bounds the memory webhooks hold. A delivery that does not fit "
        "is dropped and logged as a warning, as when WEBHOOK_QUEUE_SIZE is reached; its "
        "prediction is unaffected and can still be read with GET.",
    )

    # Replicate's file uploads (POST /v1/files), what its client sends file inputs through
    files_max_count: int = Field(
        100,
        ge=1,
        description="Replicate file uploads (POST /v1/files) kept at once; an upload past it "
        "drops the oldest file. Each file is at most MAX_IMAGE_BYTES.",
    )
    files_max_bytes: int = Field(
        256_000_000,
        ge=1_000_000,
        description="Bytes of Replicate file uploads kept in memory at once; an upload past it "
        "drops the oldest files until it fits.",
    )
    files_ttl_s: float = Field(
        3600.0,
        gt=0,
        description="A Replicate file upload is forgotten this long after it was made (its "
        "expires_at); a prediction reads the file when it is created, so this only needs to "
        "cover the time between an upload and the prediction that uses it.",
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

    image_link_ttl_s: float = Field(
        3600.0,
        gt=0,
        validation_alias=AliasChoices("image_link_ttl_s", "image_url_ttl_s"),
        description="OpenAI response_format=url: how long an image link works. Was "
        "IMAGE_URL_TTL_S.",
    )
    image_link_store_mb: float = Field(
        128.0,
        gt=0,
        validation_alias=AliasChoices("image_link_store_mb", "image_url_store_mb"),
        description="OpenAI response_format=url: memory for images behind links; the oldest "
        "go first when it is full. One response's images are stored together: a response "
        "whose images are larger than this is refused (400, naming this setting) rather than "
        "answered with links its own later images would evict. Was IMAGE_URL_STORE_MB.",
    )

    @field_validator("webhook_secret")
    @classmethod
    def _signing_key(cls, value: SecretStr | None) -> SecretStr | None:
        return None if value is None else _webhook_secret(value.get_secret_value())


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
