"""Model backends and the one function that picks a backend from settings."""

from __future__ import annotations

from inference.errors import ModelLoadError
from inference.extras import require
from inference.models.base import Model
from inference.settings import Settings


def build_model(settings: Settings) -> Model:
    """The backend named by ``settings.model``; weights are loaded later by ``load()``.

    In order: the embedded mock; your own class (``package.module:ClassName`` or an entry point
    name, ``models.custom``); else a diffusers folder or hub id.
    """
    if settings.model == "mock":
        from inference.models.mock import MockModel

        return MockModel.from_settings(settings)
    from inference.models.custom import build_custom_model, find_class

    custom = find_class(settings.model)
    if custom is not None:
        return build_custom_model(custom, settings)
    # Checked here, before the server starts, so a serve-only install answers in one line
    # instead of failing inside the load thread with a traceback.
    for module in ("diffusers", "transformers"):
        require(module, "diffusers", f"model {settings.model!r}")
    try:
        from inference.models.diffusers import DiffusersModel
    except ImportError as exc:
        raise ModelLoadError(
            f"model {settings.model!r} needs the diffusers backend: "
            f"pip install 'diffusion-serve[diffusers]' ({exc})"
        ) from exc
    return DiffusersModel.from_settings(settings)


__all__ = ["Model", "build_model"]
