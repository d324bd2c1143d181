"""The sampler (diffusers scheduler) of each pipeline call: the API's names that fit the loaded
pipeline's scheduler family, the deployment's default (SCHEDULER), and a fresh scheduler for
every call, since schedulers keep per-call state (step index, history)."""

from __future__ import annotations

from typing import Any

from inference.errors import InvalidRequest, ModelLoadError
from inference.models.diffusers.pipelines import SCHEDULERS
from inference.schema import Job, Scheduler


class Samplers:
    """What one loaded pipeline can sample with; empty until ``attach``."""

    def __init__(self, default: Scheduler | None) -> None:
        self.default = default
        self._own: tuple[type, dict[str, Any]] | None = None
        self._family: set[str] = set()
        self._own_name = ""

    def attach(self, pipe: Any, source: str) -> None:
        """Read the pipeline's scheduler; a SCHEDULER that does not fit fails the start."""
        self._own = (type(pipe.scheduler), dict(pipe.scheduler.config))
        self._own_name = type(pipe.scheduler).__name__
        self._family = {self._own_name} | {cls.__name__ for cls in pipe.scheduler.compatibles}
        if self.default is None or self.default in (allowed := self.compatible()):
            return
        choice = f"choose one of {allowed}" if allowed else "this model offers no other sampler"
        raise ModelLoadError(
            f"SCHEDULER={self.default} does not fit model {source!r} ({self._own_name}); "
            f"{choice}, or unset SCHEDULER"
        )

    def name(self, job: Job) -> str | None:
        """The job's sampler: its own choice, else the deployment's SCHEDULER, else None."""
        return job.scheduler or self.default

    def compatible(self) -> list[str]:
        """The API's scheduler names this pipeline can use (its scheduler's family)."""
        return [name for name, (cls, _) in SCHEDULERS.items() if cls in self._family]

    def check(self, job: Job, model: str) -> None:
        name = self.name(job)
        if name is not None and name not in (allowed := self.compatible()):
            raise InvalidRequest(
                "scheduler",
                f"scheduler {name!r} does not fit model {model!r} ({self._own_name}); "
                f"choose one of {allowed} or omit it",
            )

    def fresh(self, job: Job) -> Any:
        """A new scheduler for one call of ``job``'s batch."""
        import diffusers

        assert self._own is not None, "attach() first"
        own_cls, config = self._own
        name = self.name(job)
        if name is None:
            return own_cls.from_config(config)
        cls_name, overrides = SCHEDULERS[name]
        return getattr(diffusers, cls_name).from_config(config, **overrides)
