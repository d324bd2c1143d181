"""What Cog passes to ``predict()`` for inputs a caller leaves out: each input's default."""

from __future__ import annotations

import inspect
from typing import Any


def predict_defaults() -> dict[str, Any]:
    """Every ``Predictor.predict`` input at its declared ``Input(default=...)``."""
    import predict

    parameters = inspect.signature(predict.Predictor.predict).parameters
    return {name: p.default.default for name, p in parameters.items() if name != "self"}
