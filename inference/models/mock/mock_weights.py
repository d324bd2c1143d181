"""The mock model's weights: the embedded defaults, or a JSON or safetensors file (WEIGHTS_PATH,
or Cog's weights) checked so that every way a file can be wrong is one clear error."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from inference.errors import ModelLoadError
from inference.weights import PICKLE_SUFFIXES

DEFAULT_WEIGHTS = {"gamma": 0.82, "beta": 0.15}

#: What a weights file must hold, said in every error about one.
WEIGHTS_FIX = (
    "point WEIGHTS_PATH (or Cog's weights) at a JSON or safetensors file holding the numbers "
    f"'gamma' (0 <= gamma < 1) and 'beta' (>= 0), or unset it to use {DEFAULT_WEIGHTS}"
)


def load_weights(path: Path | None) -> dict[str, float]:
    """The default weights, or those in a JSON or safetensors file with keys gamma and beta.

    Every way a file can be wrong (missing, a pickle, truncated, not JSON, a key missing or not
    a finite number, out of range) is a ``ModelLoadError`` naming the file, the key and the fix.
    """
    if path is None:
        return dict(DEFAULT_WEIGHTS)
    where = f"mock weights file {str(path)!r}"
    if not path.is_file():
        raise ModelLoadError(f"{where} does not exist; {WEIGHTS_FIX}")
    if path.suffix in PICKLE_SUFFIXES:
        raise ModelLoadError(
            f"{where} is a pickle, which can run code when loaded and is never read; {WEIGHTS_FIX}"
        )
    raw = (
        _read_safetensors(path, where) if path.suffix == ".safetensors" else _read_json(path, where)
    )
    missing = sorted(set(DEFAULT_WEIGHTS) - set(raw))
    if missing:
        raise ModelLoadError(f"{where} lacks keys {missing}; {WEIGHTS_FIX}")
    weights = {}
    for key in DEFAULT_WEIGHTS:
        value = raw[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            shown = json.dumps(value) if not isinstance(value, float) else repr(value)
            raise ModelLoadError(
                f"{where}: {key!r} must be a finite number, got {shown}; {WEIGHTS_FIX}"
            )
        weights[key] = float(value)
    if not 0.0 <= weights["gamma"] < 1.0 or weights["beta"] < 0.0:
        raise ModelLoadError(
            f"mock weights in {str(path)!r} need 0 <= gamma < 1 and beta >= 0, got {weights}"
        )
    return weights


def _read_json(path: Path, where: str) -> dict[str, Any]:
    def no_constant(name: str) -> None:  # json accepts NaN and Infinity; a weight must not
        raise ValueError(f"{name} is not a finite number")

    try:
        raw = json.loads(path.read_text(encoding="utf-8"), parse_constant=no_constant)
    except UnicodeDecodeError as exc:
        raise ModelLoadError(
            f"{where} is not UTF-8 JSON (byte {exc.start}); {WEIGHTS_FIX}"
        ) from None
    except ValueError as exc:  # JSONDecodeError is one
        raise ModelLoadError(f"cannot read {where} as JSON ({exc}); {WEIGHTS_FIX}") from None
    if not isinstance(raw, dict):
        raise ModelLoadError(
            f"{where} must hold a JSON object, got {type(raw).__name__}; {WEIGHTS_FIX}"
        )
    return raw


def _read_safetensors(path: Path, where: str) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(
            f"cannot read {where}: not a valid safetensors file, truncated or corrupt ({exc}); "
            f"{WEIGHTS_FIX}"
        ) from None
    raw: dict[str, Any] = {}
    for key, tensor in tensors.items():
        if tensor.numel() != 1:
            raise ModelLoadError(
                f"{where}: {key!r} must be a single number, got a tensor of shape "
                f"{tuple(tensor.shape)}; {WEIGHTS_FIX}"
            )
        raw[key] = float(tensor.item())
    return raw
