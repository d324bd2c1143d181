"""What a request says about LoRA adapters: a reference and a scale, and their text form.

Kept free of torch and of the network so the schema, the settings and the CLI import it fast.
A reference takes one of three forms, told apart by its prefix so that a client can never make
the server guess:

- ``owner/name``, ``owner/name/dir/file.safetensors``, each optionally ``@revision``: a Hugging
  Face hub repository (default file ``pytorch_lora_weights.safetensors``, what diffusers'
  ``save_lora_weights`` writes);
- ``local:NAME``: a ``.safetensors`` file, or a folder holding that default file, under the
  deployment's ``LORA_DIR`` (never outside it);
- ``https://host/...`` (or ``http://``): a URL, only from a host in ``LORA_ALLOWED_HOSTS``.

The text form ``REF[:SCALE]`` (comma-separated for several) is what the CLI's ``--lora``, the
UI's adapter box and ``DEFAULT_LORAS`` take; a trailing ``:SCALE`` is read only when it parses
as a number, so URLs with ports stay intact.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

#: Hard bounds; predict.py repeats the scale bounds as literals (Cog parses it statically).
LORAS_MAX = 4
LORA_SCALE_MIN = 0.0
LORA_SCALE_MAX = 4.0
REF_MAX_CHARS = 500
#: The text form, said in every error about it.
TEXT_FORM = "REF[:SCALE], e.g. 'owner/name:0.8' or 'local:style.safetensors:0.5'"


class LoraAdapter(BaseModel):
    """One adapter of a request. Frozen, so a tuple of them is part of a hashable batch key."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: How forms write one item (read by ``inference.fields`` for the CLI and the UI).
    text_form: ClassVar[str] = "REF[:SCALE]"

    ref: str = Field(
        min_length=1,
        max_length=REF_MAX_CHARS,
        description="Hub id ('owner/name[/file.safetensors][@revision]'), 'local:NAME' under "
        "the server's LORA_DIR, or an https URL from an allowed host.",
    )
    # Strict, as every JSON number is: "1" and true are refused (an int is still a float).
    scale: float = Field(
        1.0,
        strict=True,
        ge=LORA_SCALE_MIN,
        le=LORA_SCALE_MAX,
        description="Strength of the adapter: 0 turns it off, 1 applies it as trained.",
    )

    def __str__(self) -> str:
        return f"{self.ref}:{self.scale:g}"

    @classmethod
    def from_text(cls, text: str) -> dict[str, Any]:
        """One item's fields from its text form (validated later, with the request)."""
        return parse_one(text)


def parse_one(text: str) -> dict[str, Any]:
    """``REF[:SCALE]`` as the fields of a ``LoraAdapter`` (validated by the caller's model)."""
    text = text.strip()
    ref, sep, tail = text.rpartition(":")
    if sep and ref:
        try:
            return {"ref": ref.strip(), "scale": float(tail)}
        except ValueError:
            pass
    return {"ref": text}


def parse_list(text: str) -> list[dict[str, Any]]:
    """A comma-separated list of ``REF[:SCALE]``; blank entries are skipped."""
    return [parse_one(part) for part in text.split(",") if part.strip()]
