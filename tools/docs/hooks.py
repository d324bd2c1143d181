"""MkDocs hooks: pages that are generated from the code, so they cannot drift from it.

``<!-- settings-table -->`` becomes the table of every setting, read from the ``Settings`` class
(name, environment variable, type, default, description), and ``<!-- include FILE -->`` becomes
the repository file FILE (BENCHMARKS.md stays at the root, where the benchmark harness and its
readers expect it, and is published unchanged).
"""

from __future__ import annotations

import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # mkdocs loads this file by path, not as a package
    sys.path.insert(0, str(ROOT))

from pydantic import BaseModel  # noqa: E402
from pydantic.fields import FieldInfo  # noqa: E402
from pydantic_core import PydanticUndefined  # noqa: E402

from inference.settings import Settings  # noqa: E402

INCLUDE = re.compile(r"^<!-- include (?P<path>\S+) -->$", re.MULTILINE)
SETTINGS_TABLE = "<!-- settings-table -->"
#: Section titles of the settings page, by group class (``LimitSettings`` -> "Limits").
TITLES = {"Limit": "Limits", "Input": "Inputs and LoRA adapters", "Prediction": "Predictions"}


def type_name(annotation: Any) -> str:
    """``int``, ``float | None``, ``'png' | 'jpeg'``: as a reader writes the type."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(arg) for arg in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def default_text(field: FieldInfo) -> str:
    """The default as an environment variable would spell it; unset for None."""
    value = field.default
    if value is PydanticUndefined and field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    if value is None or value == "":
        return "unset"
    if isinstance(value, bool):
        return "`1`" if value else "`0`"
    if isinstance(value, tuple | list | frozenset | set):
        return "`" + ",".join(str(item) for item in value) + "`" if value else "none"
    return f"`{value}`"


def cell(text: str) -> str:
    """One table cell: pipes escaped, line breaks folded."""
    return " ".join(text.split()).replace("|", "\\|")


def settings_table() -> str:
    """Every field of ``Settings``, one table per group class, in the order the classes declare.

    A field without a description stops the build: the page would have a hole in it.
    """
    sections = []
    for group in Settings.__bases__:
        if not issubclass(group, BaseModel) or group.__name__ == "BaseSettings":
            continue
        title = group.__name__.removesuffix("Settings")
        rows = [
            f"## {TITLES.get(title, title)}",
            "",
            "| variable | type | default | meaning |",
            "| --- | --- | --- | --- |",
        ]
        for name, field in group.model_fields.items():
            if not field.description:
                raise ValueError(
                    f"setting {name} has no description: give its Field a description= "
                    "(the settings page is generated from them)"
                )
            rows.append(
                f"| `{name.upper()}` | `{cell(type_name(field.annotation))}` | "
                f"{default_text(field)} | {cell(field.description)} |"
            )
        sections.append("\n".join(rows))
    return "\n\n".join(sections)


def include(match: re.Match[str]) -> str:
    """A repository file's text, its headings one level down (it becomes a section of the page)
    and its links to docs/ assets made relative to the docs site."""
    lines, fenced = [], False
    for line in (ROOT / match["path"]).read_text().splitlines():
        fenced ^= line.startswith("```")
        lines.append("#" + line if not fenced and line.startswith("#") else line)
    return "\n".join(lines).replace("](docs/", "](")


def on_page_markdown(markdown: str, **_: Any) -> str:
    markdown = INCLUDE.sub(include, markdown)
    if SETTINGS_TABLE in markdown:
        markdown = markdown.replace(SETTINGS_TABLE, settings_table())
    return markdown
