"""The mock model's adapter format (see ``inference.models.mock``): reading and fitting it."""

from __future__ import annotations

import math
from pathlib import Path

from inference.errors import InvalidRequest

#: The tensors a mock adapter may hold: deltas to the mock's two weights.
KEYS = ("lora.gamma", "lora.beta")


def read_mock_adapter(ref: str, path: Path) -> dict[str, float]:
    """A mock adapter's deltas; refuses, naming the adapter, a file that does not fit."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InvalidRequest("loras", f"loras: adapter {ref!r} cannot be read ({exc})") from None
    fit = "a mock adapter holds single numbers 'lora.gamma' and/or 'lora.beta' only"
    unknown = sorted(set(tensors) - set(KEYS))
    if unknown or not tensors:
        raise InvalidRequest(
            "loras",
            f"loras: adapter {ref!r} does not fit model 'mock' (tensors {unknown or 'none'}); "
            f"{fit}: use an adapter trained for this model",
        )
    for key, tensor in tensors.items():
        if tensor.numel() != 1 or not math.isfinite(float(tensor.reshape(-1)[0])):
            raise InvalidRequest(
                "loras",
                f"loras: adapter {ref!r}: {key!r} has shape {tuple(tensor.shape)}, which does "
                f"not fit model 'mock'; {fit}",
            )
    return {key: float(tensor.reshape(-1)[0]) for key, tensor in tensors.items()}
