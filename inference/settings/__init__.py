"""Typed settings read from environment variables: the only place the package reads env vars.

Every field has a working CPU default, so `python -m inference serve` runs with no configuration.
Names carry their units (``max_wait_ms``, ``request_timeout_s``) so a deployer never has to guess.
Each group of fields is its own module (model, engine, limits, server, inputs, predictions);
``Settings`` composes them, so callers read every field flat (``settings.max_body_bytes``).
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from inference import schema
from inference.settings.engine import EngineSettings
from inference.settings.inputs import InputSettings
from inference.settings.limits import LimitSettings
from inference.settings.model import ModelSettings
from inference.settings.predictions import PredictionSettings
from inference.settings.server import ServerSettings


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
    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", hide_input_in_errors=True
    )

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


__all__ = ["Settings", "describe_settings_errors", "get_settings"]
