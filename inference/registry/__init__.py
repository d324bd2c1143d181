"""Models and versions behind one endpoint, with traffic weights that move live (issue 23).

A registry file (``MODELS_FILE``, TOML: ``parse``) lists models, each with versions; a version
names its backend as ``MODEL`` does and may override the deployment's defaults, limits and
batching. ``Registry.route`` picks the version that serves a request (by weight, a sticky key,
or a pin), and ``Registry.set_weights`` re-weights a model atomically. Without a file the
registry is one model, ``MODEL``, and everything behaves as it did before registries.
"""

from inference.registry.core import IMPLICIT_NAME, Registry
from inference.registry.problems import RegistryError, UnknownModel
from inference.registry.spec import BackendKind, ModelSpec, Version, VersionRef
from inference.registry.weights import InMemoryWeights, WeightsBackend

__all__ = [
    "IMPLICIT_NAME",
    "BackendKind",
    "InMemoryWeights",
    "ModelSpec",
    "Registry",
    "RegistryError",
    "UnknownModel",
    "Version",
    "VersionRef",
    "WeightsBackend",
]
