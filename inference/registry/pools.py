"""A version's own pool of containers where the runtime scales one per version (Modal).

On Modal each registry version runs in its own autoscaled pool of GPU containers (deploy.py),
and a canary on 10% of the traffic needs neither the GPU nor the warm containers of the model
it is tried beside. So a version may carry a ``[models.versions.modal]`` table; a key it leaves
out takes the deployment's ``MODAL_*`` setting of the same name, resolved in deploy.py, which
alone knows those settings (this package never imports modal).

The ranges are the deployment settings' own (deploy.py's ``DeploySettings``, whose ``gpu``
uses ``GPU_PATTERN``; deploy.py checks each pool's merged settings with it again), so a
value the registry accepts is one ``MODAL_*`` would accept too. Elsewhere (one process:
local, the Space) the table is read, checked and ignored: there is no pool to size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

#: One GPU type, optionally with a count (``H100:2``).
_GPU = r"[A-Za-z0-9!+-]+(:[1-8])?"
#: One GPU type, or fallbacks in order of preference ("H100, A100-80GB").
GPU_PATTERN = rf"^{_GPU}(\s*,\s*{_GPU})*$"
GPU_REQUEST = Annotated[str, Field(pattern=GPU_PATTERN)]
SCALEDOWN_S = Annotated[int, Field(ge=2, le=3600)]
MIN_CONTAINERS = Annotated[int, Field(ge=0, le=100)]
MAX_CONTAINERS = Annotated[int, Field(ge=1, le=1000)]
BUFFER_CONTAINERS = Annotated[int, Field(ge=0, le=100)]


class PoolOptions(BaseModel):
    """A version's pool on Modal; None takes the deployment's ``MODAL_<KEY>``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    gpu: GPU_REQUEST | None = None
    min_containers: MIN_CONTAINERS | None = None
    max_containers: MAX_CONTAINERS | None = None
    scaledown_window_s: SCALEDOWN_S | None = None
    buffer_containers: BUFFER_CONTAINERS | None = None

    @model_validator(mode="after")
    def _min_below_max(self) -> PoolOptions:
        low, high = self.min_containers, self.max_containers
        if low is not None and high is not None and low > high:
            raise ValueError(
                f"min_containers = {low} exceeds max_containers = {high}; lower one or raise "
                "the other"
            )
        return self

    def overrides(self) -> dict[str, Any]:
        """The keys this version sets, by name: what replaces the deployment's settings."""
        return self.model_dump(exclude_none=True)


#: The keys a ``[models.versions.modal]`` table may hold.
POOL_KEYS = tuple(PoolOptions.model_fields)


def pool_options(where: str, raw: object, problems: list[str]) -> PoolOptions:
    """The ``modal`` table ``raw`` of a version as ``PoolOptions``; each bad value is one
    problem naming its key (and the version's options are then empty)."""
    if raw is None:
        return PoolOptions()
    if not isinstance(raw, Mapping):
        problems.append(
            f"{where}: modal must be a table ([models.versions.modal]) of {', '.join(POOL_KEYS)}, "
            f"got {raw!r}"
        )
        return PoolOptions()
    try:
        return PoolOptions.model_validate(dict(raw))
    except ValidationError as exc:
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = f"unknown key; known keys are {', '.join(POOL_KEYS)}"
            key = f"modal.{error['loc'][0]} = {error.get('input')!r}: " if error["loc"] else ""
            problems.append(f"{where}: {key}{message}")
        return PoolOptions()
