"""Optional extras: one clear line, never a traceback, when a feature's extra is not installed."""

from __future__ import annotations

import importlib.util

from inference.errors import InferenceError


def install_hint(extra: str) -> str:
    return f"pip install 'diffusion-serve[{extra}]' (from a checkout: pip install -e '.[{extra}]')"


class MissingExtra(InferenceError):
    """A feature needs an optional extra that is not installed."""

    code = "missing_extra"

    def __init__(self, feature: str, extra: str) -> None:
        super().__init__(f"{feature} needs the optional '{extra}' extra: {install_hint(extra)}")
        self.extra = extra


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (checked without importing it)."""
    return importlib.util.find_spec(module) is not None


def require(module: str, extra: str, feature: str) -> None:
    """Raise ``MissingExtra`` unless ``module`` (which ``extra`` installs) is importable."""
    if not installed(module):
        raise MissingExtra(feature, extra)
