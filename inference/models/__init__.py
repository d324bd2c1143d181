"""Model backends and the one function that picks a backend from settings."""

from __future__ import annotations

from inference.errors import ModelLoadError
from inference.models.base import Model
from inference.settings import Settings


def build_model(settings: Settings) -> Model:
    """The backend named by ``settings.model``; weights are loaded later by ``load()``."""
    if settings.model == "mock":
        from inference.models.mock import MockModel

        return MockModel.from_settings(settings)
    try:
        from inference.models.diffusers import DiffusersModel
    except ImportError as exc:
        raise ModelLoadError(
            f"model {settings.model!r} needs the diffusers backend: "
            f"pip install 'diffusion-serve[diffusers]' ({exc})"
        ) from exc
    return DiffusersModel.from_settings(settings)


__all__ = ["Model", "build_model"]
