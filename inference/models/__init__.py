"""Model backends and the one function that picks a backend from settings."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from inference.errors import ModelLoadError
from inference.models.base import Model
from inference.settings import Settings

CLASS_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def build_model(settings: Settings) -> Model:
    """The backend named by ``settings.model``; weights are loaded later by ``load()``.

    ``package.module:ClassName`` builds that class (``ClassName.from_settings(settings)`` if it
    has one, else ``ClassName()``): how the benchmark serves its stand-in model without any
    bench code in this package.
    """
    if settings.model == "mock":
        from inference.models.mock import MockModel

        return MockModel(weights_path=settings.weights_path)
    if CLASS_PATH.match(settings.model) and not Path(settings.model).exists():
        module_name, _, class_name = settings.model.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise ModelLoadError(f"MODEL={settings.model}: cannot load that class ({exc})") from exc
        factory = getattr(cls, "from_settings", None)
        return factory(settings) if callable(factory) else cls()
    try:
        from inference.models.diffusers import DiffusersModel
    except ImportError as exc:
        raise ModelLoadError(
            f"model {settings.model!r} needs the diffusers backend: "
            f"pip install 'diffusion-serve[diffusers]' ({exc})"
        ) from exc
    return DiffusersModel.from_settings(settings)


__all__ = ["Model", "build_model"]
