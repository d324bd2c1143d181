"""The request's fields as plain data, for front doors that build their own forms from them.

The CLI's flags and the Gradio form are derived from ``GenerateRequest`` through this module,
so a new request field appears in both without an edit there. Image fields are ``bytes``:
each front door offers a file (a path flag, an upload widget) and hands over its bytes.
(Cog cannot use this module: its build parses predict.py statically, so predict.py repeats the
fields as literals and a test proves that they agree.)
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic.fields import FieldInfo

from inference.schema import IMAGE_FIELDS, GenerateRequest


@dataclass(frozen=True)
class RequestField:
    """One field: its Python type, whether it may be omitted (None), bounds and choices.

    A list field (``type`` is ``list``) holds items with a text form (``item_form``, e.g.
    ``REF[:SCALE]``) that ``item_from_text`` reads: repeatable flags, a comma-separated box.
    """

    name: str
    type: type  # str, int, float, list, or bytes for an image file
    default: Any
    description: str
    optional: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    item_form: str = ""
    item_from_text: Callable[[str], Any] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def from_text(self, text: str) -> list[Any]:
        """A list field's comma-separated text form as its items (blank entries skipped)."""
        assert self.item_from_text is not None
        return [self.item_from_text(part) for part in text.split(",") if part.strip()]


def _describe(name: str, info: FieldInfo) -> RequestField:
    if name in IMAGE_FIELDS:
        return RequestField(name, bytes, None, info.description or "", optional=True)
    annotation = info.annotation
    optional = False
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        optional = len(args) < len(get_args(annotation))
        (annotation,) = args
    choices: tuple[str, ...] = ()
    if get_origin(annotation) is Literal:
        choices = tuple(get_args(annotation))
        annotation = str
    item: dict[str, Any] = {}
    if get_origin(annotation) is list:
        (item_type,) = get_args(annotation)
        if not hasattr(item_type, "from_text"):
            raise TypeError(f"request field {name!r} lists items without a text form")
        item = {"item_form": item_type.text_form, "item_from_text": item_type.from_text}
        annotation = list
    if annotation not in (str, int, float, list):
        raise TypeError(f"request field {name!r} has a type the front doors cannot offer yet")
    bounds: dict[str, Any] = {}
    for constraint in info.metadata:
        if isinstance(constraint, annotated_types.Ge):
            bounds["minimum"] = constraint.ge
        elif isinstance(constraint, annotated_types.Le):
            bounds["maximum"] = constraint.le
        elif isinstance(constraint, annotated_types.MaxLen):
            bounds["max_length"] = constraint.max_length
    return RequestField(
        name=name,
        type=annotation,
        default=info.default,
        description=info.description or "",
        optional=optional,
        choices=choices,
        **bounds,
        **item,
    )


@cache
def request_fields() -> tuple[RequestField, ...]:
    """Every ``GenerateRequest`` field, in declaration order."""
    return tuple(_describe(name, info) for name, info in GenerateRequest.model_fields.items())
