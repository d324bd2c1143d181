"""The registry: which models and versions this server has, and which version serves a request.

Routing reads one immutable snapshot (model -> ``Split``) through a single attribute, and
re-weighting builds a whole new snapshot and assigns it in one statement, so a reader sees the
old table or the new one, never a mix, and needs no lock; writers take a lock only to serialise
with each other (two admin calls must not each drop the other's change).

A pinned version (``name@version``) is served whatever its weight, 0 included: a weight says
how much of the unpinned traffic a version gets, and 0 is how an operator drains a version
while still reaching it by name (to check a canary before it takes traffic, or an old version
while clients move off it).

Without a registry file the registry is implicit: one model, ``default``, whose one version is
``MODEL`` with every setting as it is, and which every name routes to, as every name did before
models could be chosen (the OpenAI route's ``model`` was ignored), so nothing changes for a
deployment that never heard of registries.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

from inference.registry.backends import classify
from inference.registry.parse import read_registry
from inference.registry.problems import RegistryError, UnknownModel, did_you_mean, listed
from inference.registry.routing import Split
from inference.registry.spec import BackendKind, ModelSpec, Version, VersionRef
from inference.registry.weights import InMemoryWeights, WeightsBackend, weight_problems
from inference.settings import Settings

log = logging.getLogger(__name__)

#: The name of the one model and of its one version when no registry file is set.
IMPLICIT_NAME = "default"


class Registry:
    """Models and versions with live traffic weights; build it once with ``from_settings``."""

    def __init__(
        self,
        models: Sequence[ModelSpec],
        default_model: str,
        default_version: str | None = None,
        *,
        implicit: bool = False,
        weights_backend: WeightsBackend | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """A registry of ``models`` (already checked); ``default_model`` serves requests that
        name none, pinned to ``default_version`` if given. Live weights start from the
        backend's where it holds a model's (a fleet's re-weighting survives a restart), else
        from the specs, which are then stored there."""
        self._models = MappingProxyType({model.name: model for model in models})
        self.default_model = default_model
        self.default_version = default_version
        self.implicit = implicit
        self._backend: WeightsBackend = weights_backend or InMemoryWeights()
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        initial = {model.name: {v.name: v.weight for v in model.versions} for model in models}
        for name, weights in initial.items():
            if self._backend.get(name) is None:
                self._backend.put(name, weights)
        self._table: Mapping[str, Split] = MappingProxyType(
            {name: Split.of(weights) for name, weights in initial.items()}
        )
        self.refresh()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        weights_backend: WeightsBackend | None = None,
        rng: random.Random | None = None,
    ) -> Registry:
        """The registry in ``MODELS_FILE``, or without one the implicit registry of ``MODEL``;
        ``RegistryError`` listing every problem of a bad file."""
        if settings.models_file is None:
            version = Version(
                model=IMPLICIT_NAME,
                name=IMPLICIT_NAME,
                backend=settings.model,
                kind=_implicit_kind(settings.model),
                revision=settings.model_revision,
                weights_path=settings.weights_path,
                weight=1.0,
                settings=settings,
            )
            model = ModelSpec(IMPLICIT_NAME, (version,))
            return cls(
                [model], IMPLICIT_NAME, implicit=True, weights_backend=weights_backend, rng=rng
            )
        if settings.model != "mock":
            log.warning(
                "MODELS_FILE=%s is set, so MODEL=%s is not served; name it in the registry",
                settings.models_file,
                settings.model,
            )
        parsed = read_registry(settings.models_file, settings)
        return cls(
            parsed.models,
            parsed.default_model,
            parsed.default_version,
            weights_backend=weights_backend,
            rng=rng,
        )

    @property
    def models(self) -> Mapping[str, ModelSpec]:
        """Every model by name, in the registry's order."""
        return self._models

    def version(self, ref: VersionRef) -> Version:
        """The version ``ref`` names (a ref from ``route``, so it exists)."""
        version = self._models[ref.model].version(ref.version)
        if version is None:
            raise KeyError(str(ref))
        return version

    def weights(self, model: str) -> dict[str, float]:
        """The model's live weights, version -> weight, every version listed."""
        self._spec(model)
        return dict(self._table[model].weights)

    def route(self, model: str | None, sticky_key: str | None = None) -> VersionRef:
        """The version that serves a request naming ``model``: None for the default model,
        ``name`` for a version chosen by weight (the same one for the same ``sticky_key``
        while weights stand), ``name@version`` for that version whatever its weight.

        An unknown model or version is ``UnknownModel``, listing what this server has.
        """
        table = self._table  # one read: the whole route sees one snapshot
        if self.implicit:
            return VersionRef(IMPLICIT_NAME, IMPLICIT_NAME)
        if model is None:
            if self.default_version is not None:
                return VersionRef(self.default_model, self.default_version)
            name, pinned = self.default_model, None
        else:
            name, at, pin = model.partition("@")
            pinned = pin if at else None
        spec = self._spec(name)
        if pinned is not None:
            if spec.version(pinned) is None:
                raise UnknownModel(
                    f"model {name!r} has no version {pinned!r}"
                    f"{did_you_mean(pinned, spec.version_names)}; its versions are "
                    f"{listed(spec.version_names)}",
                    [f"{name}@{version}" for version in spec.version_names],
                )
            return VersionRef(name, pinned)
        split = table[name]
        chosen = split.sticky(name, sticky_key) if sticky_key else split.pick(self._rng)
        return VersionRef(name, chosen)

    def set_weights(self, model: str, weights: Mapping[str, float]) -> dict[str, float]:
        """Re-weight ``model``'s versions live and return its new weights (every version).

        Versions left out keep their weight. The result obeys the registry file's rules (each
        weight finite and >= 0, not all 0), else ``RegistryError`` lists each problem and
        nothing changes. The backend is written before this process routes by the new
        weights, so a fleet never routes by a table the backend does not hold.
        """
        spec = self._spec(model)
        with self._lock:
            merged = {**self._table[model].weights, **weights}
            problems = weight_problems(f"model {model!r}", merged, spec.version_names)
            if problems:
                raise RegistryError(problems, field="weights")
            new = {name: float(merged[name]) for name in spec.version_names}
            self._backend.put(model, new)
            self._table = MappingProxyType({**self._table, model: Split.of(new)})
        log.info("model %s re-weighted: %s", model, new)
        return new

    def refresh(self) -> bool:
        """Adopt the weights the backend holds (another container re-weighted the fleet);
        whether anything changed. Stored weights that break the rules (a hand edit, a version
        since removed) are logged and skipped, never routed by."""
        with self._lock:
            table = dict(self._table)
            for name, spec in self._models.items():
                stored = self._backend.get(name)
                if stored is None or dict(stored) == dict(table[name].weights):
                    continue
                merged = {**table[name].weights, **stored}
                problems = weight_problems(f"model {name!r}", merged, spec.version_names)
                if problems:
                    log.warning("stored weights skipped: %s", "; ".join(problems))
                    continue
                table[name] = Split.of({v: float(merged[v]) for v in spec.version_names})
            changed = any(table[name] is not self._table[name] for name in table)
            if changed:
                self._table = MappingProxyType(table)
            return changed

    def _spec(self, model: str) -> ModelSpec:
        spec = self._models.get(model)
        if spec is None:
            raise UnknownModel(
                f"unknown model {model!r}{did_you_mean(model, self._models)}; this server has "
                f"{listed(self._models)} (name@version pins a version)",
                list(self._models),
            )
        return spec


def _implicit_kind(model: str) -> BackendKind:
    """What ``MODEL`` names; a bare word that is neither ``mock`` nor an entry point is a
    legacy hub id to ``build_model``, as it is here."""
    try:
        return classify(model, Path.cwd())[0]
    except ValueError:
        return "hub"


__all__ = ["IMPLICIT_NAME", "Registry", "RegistryError", "UnknownModel"]
