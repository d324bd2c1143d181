"""What the native routes accept that their types do not bound: a batch's size on this server."""

from __future__ import annotations

from typing import Any

from inference.schema import Limits
from inference.settings import Settings


def document(document: dict[str, Any], limits: Limits, settings: Settings) -> None:
    batch = document["components"]["schemas"]["BatchRequest"]["properties"]["requests"]
    batch["maxItems"] = settings.max_batch_requests
