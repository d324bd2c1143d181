"""LoRA adapters on a loaded diffusers pipeline, through diffusers' own adapter API (peft).

Each adapter is loaded once into the pipeline under its own name (``load_lora_weights(...,
adapter_name=)``) and stays there while it is in the LRU; a batch then only picks its adapters
and scales (``set_adapters``), and a batch without adapters turns them all off
(``disable_lora``), which computes exactly the base model: the base weights are never touched,
so switching never reloads the model. Eviction deletes the adapter's layers
(``delete_adapters``). All of this runs on the engine's worker thread, the only one that calls
the pipeline.

A compiled denoiser (TORCH_COMPILE=1) would recompile for each new adapter that way, so there
the adapters hot-swap into fixed slots instead (``hotswap``), and the LRU holds their tensors
in host memory.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inference.errors import InvalidRequest
from inference.lora.support import Adapters
from inference.lora_spec import LoraAdapter
from inference.models.diffusers.hotswap import HotswapSlots, check_file, read_weights
from inference.settings import Settings

log = logging.getLogger(__name__)

FIT = "use an adapter trained for this model's architecture"


class PipelineAdapters:
    """The adapters of one pipeline: loaded (LRU), active or off."""

    def __init__(self, settings: Settings) -> None:
        self.adapters = Adapters(settings, on_evict=self._unload)
        self.max_rank = settings.lora_max_rank
        self.slots: HotswapSlots | None = None  # with a compiled denoiser
        self.pipe: Any = None
        self.model = ""
        self._names = (f"lora_{i}" for i in itertools.count())
        self._enabled = False

    def attach(self, pipe: Any, model: str, *, compiled: bool = False) -> None:
        """Serve adapters on ``pipe``; hot-swapped into slots when its denoiser is compiled."""
        self.pipe = pipe
        self.model = model
        self.slots = HotswapSlots(pipe, self.max_rank) if compiled and self.supported else None

    @property
    def supported(self) -> bool:
        return hasattr(self.pipe, "load_lora_weights") and hasattr(self.pipe, "set_adapters")

    def check(self, loras: Sequence[LoraAdapter]) -> None:
        """Refuse adapters on a pipeline without LoRA support, then check each reference."""
        if loras and self.pipe is not None and not self.supported:
            raise InvalidRequest(
                "loras",
                f"loras: model {self.model!r} ({type(self.pipe).__name__}) takes no LoRA adapters; "
                "omit loras",
            )
        hotswap = functools.partial(check_file, max_rank=self.max_rank)
        self.adapters.check(loras, hotswap if self.slots is not None else None)

    def activate(self, loras: Sequence[LoraAdapter]) -> None:
        """Make exactly ``loras`` (with their scales) active; none: the base model."""
        if self.slots is not None:
            self._activate_slots(self.slots, loras)
            return
        if not loras:
            if self._enabled:
                self.pipe.disable_lora()
                self._enabled = False
            return
        loaded = self.adapters.load(loras, self._load)
        self.pipe.enable_lora()
        self._enabled = True
        self.pipe.set_adapters([name for name, _ in loaded], [scale for _, scale in loaded])

    def _activate_slots(self, slots: HotswapSlots, loras: Sequence[LoraAdapter]) -> None:
        loaded = self.adapters.load(loras, read_weights) if loras else []
        try:
            slots.activate(loaded)
        except (RuntimeError, ValueError, KeyError) as exc:  # other layers, not a LoRA
            raise self._misfit(slots.failed, exc, slots=True) from None

    def _load(self, ref: str, path: Path) -> str:
        """Load the file into the pipeline under a fresh name; refuse one that does not fit."""
        name = next(self._names)
        try:
            self.pipe.load_lora_weights(str(path), adapter_name=name)
        except (RuntimeError, ValueError, KeyError) as exc:  # size mismatch, not a LoRA
            self._forget(name)
            raise self._misfit(ref, exc) from None
        if name not in self._present():
            raise InvalidRequest(
                "loras",
                f"loras: adapter {ref!r} matches no layer of this model (no LoRA weights were "
                f"loaded); {FIT}",
            )
        log.info("loaded adapter %r as %s", ref, name)
        return name

    def _present(self) -> set[str]:
        return {n for names in self.pipe.get_list_adapters().values() for n in names}

    def _forget(self, name: str) -> None:
        if name in self._present():
            self.pipe.delete_adapters(name)

    def _misfit(self, ref: str, exc: Exception, *, slots: bool = False) -> InvalidRequest:
        """The refusal of an adapter whose load raised ``exc``, with the error's telling line."""
        log.info("adapter %r failed to load: %s", ref, exc)
        first = str(exc).strip().splitlines() or [type(exc).__name__]
        detail = next((line.strip() for line in first[1:] if line.strip()), first[0])
        fit = FIT
        where = f"model {self.model!r}"
        if slots:
            fit += " that targets the layers of the first adapter in its hot-swap slot"
            where = f"the hot-swap slots of {where}"
        return InvalidRequest(
            "loras", f"loras: adapter {ref!r} does not fit {where} ({detail[:200]}); {fit}"
        )

    def _unload(self, ref: str, value: Any) -> None:
        if self.slots is None:  # hot-swapped adapters are only host tensors: nothing to delete
            self._forget(value)
