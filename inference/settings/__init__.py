"""Typed settings read from environment variables: the only place the package reads env vars.

Every field has a working CPU default, so `python -m inference serve` runs with no configuration.
Names carry their units (``max_wait_ms``, ``request_timeout_s``) so a deployer never has to guess.
Each group of fields is its own module (model, engine, limits, server, inputs, predictions);
``Settings`` composes them, so callers read every field flat (``settings.max_body_bytes``).
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from typing import Any

from pydantic import ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from inference import schema
from inference.settings.engine import EngineSettings
from inference.settings.inputs import InputSettings
from inference.settings.limits import LimitSettings
from inference.settings.model import ModelSettings
from inference.settings.predictions import PredictionSettings
from inference.settings.server import ServerSettings

log = logging.getLogger(__name__)

#: Old names still read, each with a warning at start (issue 21: image inputs fetched from URLs
#: and OpenAI's served image links both said IMAGE_URL_*). Old name -> field.
RENAMED = {
    "image_url_hosts": "input_url_hosts",
    "image_url_allow_private": "input_url_allow_private",
    "image_url_timeout_s": "input_url_deadline_s",
    "image_url_ttl_s": "image_link_ttl_s",
    "image_url_store_mb": "image_link_store_mb",
}


class Settings(
    BaseSettings,
    ModelSettings,
    EngineSettings,
    LimitSettings,
    ServerSettings,
    InputSettings,
    PredictionSettings,
):
    """Deployment settings; each field is read from the upper-cased env var of the same name."""

    # hide_input_in_errors: an error elsewhere must never print AUTH_TOKEN or HF_TOKEN.
    # populate_by_name: code and tests pass fields by name; env vars may use an old name too.
    model_config = SettingsConfigDict(
        env_prefix="",
        case_sensitive=False,
        extra="ignore",
        hide_input_in_errors=True,
        populate_by_name=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _warn_old_names(cls, data: Any) -> Any:
        """One line per old name in use. The env source files a value under the field's new
        name, so the environment itself is asked which name was set."""
        given = {str(key).lower() for key in (data if isinstance(data, dict) else ())}
        for old in sorted(RENAMED.keys() & (given | {key.lower() for key in os.environ})):
            log.warning("%s is deprecated: set %s instead", old.upper(), RENAMED[old].upper())
        return data

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


def env_names() -> frozenset[str]:
    """Every environment variable ``Settings`` reads: each field's name and its old names
    (what deploy.py forwards to a container and what tests clear)."""
    return frozenset(name.upper() for name in (*Settings.model_fields, *RENAMED))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once. Tests call ``get_settings.cache_clear()``."""
    return Settings()


__all__ = ["RENAMED", "Settings", "describe_settings_errors", "env_names", "get_settings"]
