"""What a registry holds: models, their versions, and the reference a route returns.

Frozen dataclasses, because a registry is shared by every request thread and never changes
after start; only traffic weights move, and they live in the registry's swapped snapshot
(``core``), not here, so a ``Version`` can be handed around and cached freely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from inference.registry.pools import PoolOptions
from inference.settings import Settings

#: How a version's backend string is read, in the order ``models.build_model`` tries them.
BackendKind = Literal["mock", "class", "entry_point", "hub", "folder"]


@dataclass(frozen=True)
class VersionRef:
    """Which version serves a request: a bounded metrics label, a cache-key part, and what a
    result reports as having served it (``str(ref)`` is ``model@version``, which pins it)."""

    model: str
    version: str

    def __str__(self) -> str:
        return f"{self.model}@{self.version}"


@dataclass(frozen=True)
class Version:
    """One servable version: its backend exactly as ``MODEL`` is written, and ``settings``, the
    deployment's settings with this version's backend, weights, defaults, limits and batching
    applied, so today's ``build_model(settings)`` and engine build it unchanged."""

    model: str
    name: str
    backend: str
    kind: BackendKind
    revision: str | None
    weights_path: Path | None
    #: The traffic weight the registry started with; live weights are ``Registry.weights()``.
    weight: float
    settings: Settings = field(compare=False, repr=False)
    #: Its own pool of containers where a runtime scales one per version (Modal).
    pool: PoolOptions = field(default_factory=PoolOptions)

    @property
    def ref(self) -> VersionRef:
        return VersionRef(self.model, self.name)


@dataclass(frozen=True)
class ModelSpec:
    """A model name clients ask for, and its versions in the order the registry lists them."""

    name: str
    versions: tuple[Version, ...]
    description: str = ""

    def version(self, name: str) -> Version | None:
        """The version called ``name``, or None."""
        return next((version for version in self.versions if version.name == name), None)

    @property
    def version_names(self) -> list[str]:
        return [version.name for version in self.versions]
