"""LoRA adapters hot-swapped into a compiled denoiser (TORCH_COMPILE=1).

A compiled graph is specialised to what it traced: loading an adapter under a new name adds
layers, and changing the active adapters or a (float) scale changes what the graph guards on,
so with the plain adapter API every new adapter would recompile the denoiser (tens of seconds
on a GPU). Here the denoiser instead holds a fixed set of adapter *slots*: slot ``i`` holds the
``i``-th adapter of the current batch. A slot is created (one recompilation) the first time a
request brings that many adapters, zero-padded to LORA_MAX_RANK with its scale a tensor
(diffusers' ``enable_lora_hotswap``, peft's ``prepare_model_for_compiled_hotswap``); later
adapters are copied into it in place (``load_lora_weights(..., hotswap=True)``), and scales are
written into those tensors in place, so neither recompiles. Every slot stays active: a slot
the batch does not use, and all of them for a batch without adapters, gets scale 0, which adds
exactly zero, instead of ``disable_lora`` (another graph).

Limits (peft's): an adapter must target the same layers as the slot's first adapter, or a
subset; rank at most LORA_MAX_RANK (refused at validation); the denoiser only (adapters with
text-encoder weights are refused). Every adapter costs the compute of LORA_MAX_RANK. An adapter
that fails to swap in (other layers) empties the slots: the next adapter recompiles once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from inference.errors import InvalidRequest

log = logging.getLogger(__name__)

#: Key suffixes of a LoRA's down (A) matrices, whose first dimension is the rank: diffusers/peft
#: and kohya naming.
DOWN_SUFFIXES = ("lora_A.weight", "lora_down.weight", "lora.down.weight")
#: Key prefixes of text-encoder weights (diffusers and kohya naming).
TEXT_ENCODER_PREFIXES = ("text_encoder", "lora_te")


class Weights(NamedTuple):
    """An adapter's tensors in host memory (the LRU's value), read once from its file."""

    ref: str
    tensors: dict[str, Any]

    def copy(self) -> dict[str, Any]:
        """Fresh tensors for a load: peft may adopt the ones it is given as the slot's own
        parameters (no copy on a CPU), and the next swap would then overwrite this adapter."""
        return {key: tensor.clone() for key, tensor in self.tensors.items()}


def read_weights(ref: str, path: Path) -> Weights:
    from safetensors.torch import load_file

    return Weights(ref, load_file(str(path)))


def check_file(ref: str, path: Path, max_rank: int) -> None:
    """Refuse, from the file's header alone, an adapter the slots cannot take."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        downs = {k: f.get_slice(k).get_shape() for k in keys if k.endswith(DOWN_SUFFIXES)}
    for key, shape in downs.items():
        if len(shape) < 2:  # a matrix (or a conv kernel) is rank x inputs: this is no LoRA
            raise InvalidRequest(
                "loras",
                f"loras: adapter {ref!r} is not a LoRA: its down matrix {key!r} has shape "
                f"{list(shape)}; use a LoRA adapter (safetensors of lora_A/lora_B matrices)",
            )
    if any(k.startswith(TEXT_ENCODER_PREFIXES) for k in keys):
        raise InvalidRequest(
            "loras",
            f"loras: adapter {ref!r} has text-encoder weights, which cannot be hot-swapped into "
            "a compiled model (TORCH_COMPILE=1); use a denoiser-only adapter or unset "
            "TORCH_COMPILE",
        )
    rank = max((shape[0] for shape in downs.values()), default=0)
    if rank > max_rank:
        raise InvalidRequest(
            "loras",
            f"loras: adapter {ref!r} has rank {rank}, above LORA_MAX_RANK={max_rank} (with "
            f"TORCH_COMPILE=1 adapters hot-swap into slots of that rank); use an adapter of "
            f"rank <= {max_rank} or raise LORA_MAX_RANK",
        )


class HotswapSlots:
    """The adapter slots of one compiled denoiser and what each holds now."""

    def __init__(self, pipe: Any, max_rank: int) -> None:
        self.pipe = pipe
        self.max_rank = max_rank
        self.denoiser = getattr(pipe, "unet", None) or pipe.transformer
        self.held: list[str] = []  # the adapter ref in each slot
        self._scalings: list[list[tuple[Any, float]]] = []  # per slot: (scale tensor, alpha/r)
        self.failed = ""

    @staticmethod
    def name(slot: int) -> str:
        return f"slot_{slot}"

    def activate(self, loaded: Sequence[tuple[Weights, float]]) -> None:
        """Put each adapter in its slot (a copy, unless it is there already); set the scales."""
        for slot, (weights, _) in enumerate(loaded):
            if slot < len(self.held) and self.held[slot] == weights.ref:
                continue
            self.failed = weights.ref  # what to name if this load raises
            if slot == len(self.held):
                self._create(weights)
            else:
                self._swap(slot, weights)
        for slot in range(len(self.held)):
            scale = loaded[slot][1] if slot < len(loaded) else 0.0
            for tensor, base in self._scalings[slot]:
                tensor.fill_(base * scale)

    def _create(self, weights: Weights) -> None:
        """A new slot from its first adapter: padded to LORA_MAX_RANK, scales as tensors."""
        slot = len(self.held)
        # Only the load right after enable_lora_hotswap prepares (pads) the model, so each new
        # slot asks again; "ignore": the denoiser is compiled by now, and this one
        # recompilation per slot is expected.
        self.pipe.enable_lora_hotswap(target_rank=self.max_rank, check_compiled="ignore")
        try:
            self.pipe.load_lora_weights(weights.copy(), adapter_name=self.name(slot))
            scalings = self._read_scalings(slot)
            if not scalings:
                raise ValueError("it matches no layer of the denoiser")
        except Exception:
            # The load made the new slot the only active adapter; a failed one is deleted,
            # and peft then activates the first slot alone: the others would stop applying.
            self._activate_held()
            raise
        self.held.append(weights.ref)
        self._scalings.append(scalings)
        self._activate_held()
        log.info("adapter %r created hot-swap slot %d (rank %d)", weights.ref, slot, self.max_rank)

    def _activate_held(self) -> None:
        """Every slot active (unused ones at scale 0): loading activates only the new one."""
        if self.held:
            self.denoiser.set_adapter([self.name(i) for i in range(len(self.held))])

    def _swap(self, slot: int, weights: Weights) -> None:
        try:
            self.pipe.load_lora_weights(weights.copy(), adapter_name=self.name(slot), hotswap=True)
        except Exception:
            self._clear()
            raise
        self.held[slot] = weights.ref
        self._scalings[slot] = self._read_scalings(slot)
        log.info("adapter %r hot-swapped into slot %d", weights.ref, slot)

    def _clear(self) -> None:
        """Remove every slot: diffusers deletes a slot whose swap failed, and the slots are
        numbered by position, so the next adapter starts again from slot 0 (one recompile)."""
        present = {n for names in self.pipe.get_list_adapters().values() for n in names}
        names = [self.name(i) for i in range(len(self.held)) if self.name(i) in present]
        if names:
            self.pipe.delete_adapters(names)
        self.held, self._scalings = [], []
        log.warning("a failed hot-swap emptied the adapter slots; the next adapter recompiles")

    def _read_scalings(self, slot: int) -> list[tuple[Any, float]]:
        """Each layer's scale tensor for ``slot`` and its value at scale 1 (alpha / rank), as
        the load has just set it; a request's scale multiplies that."""
        from peft.tuners.lora import LoraLayer

        name = self.name(slot)
        return [
            (module.scaling[name], float(module.scaling[name]))
            for module in self.denoiser.modules()
            if isinstance(module, LoraLayer) and name in module.scaling
        ]
