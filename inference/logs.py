"""Logging set-up shared by every entry point (CLI, Cog's setup, Modal's container start)."""

from __future__ import annotations

import logging


def configure_logging(level: str) -> None:
    """The package's logs at ``level`` (LOG_LEVEL) on stderr.

    Neither Cog nor Modal configures Python logging, so without this the model's load and
    warm-up times and the per-step debug lines would go nowhere. A host that already set up
    handlers keeps them; only the package's level is set.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("inference").setLevel(level.upper())
