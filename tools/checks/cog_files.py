"""Reading Cog's files: cog.yaml, the Python packages its image installs, pyproject.toml's ranges.

Shared by the Cog contract check (``cog``), the torch API check (``torch_compat``, which needs
the image's torch pin) and the lock check (``lock``), so that none has to import another.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tools.checks import Problem

#: pip's comment rule: ``#`` at the start of a line or after whitespace (not inside a URL).
COMMENT = re.compile(r"(^|\s+)#.*$")


def _key_lines(node: yaml.Node, prefix: str = "") -> dict[str, int]:
    """Dotted key path -> 1-based line, for locating problems in cog.yaml."""
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = f"{prefix}.{key.value}" if prefix else str(key.value)
            lines[path] = key.start_mark.line + 1
            lines.update(_key_lines(value, path))
    return lines


def load_cog_yaml(root: Path) -> tuple[dict[str, Any], yaml.Node, dict[str, int]] | Problem:
    """cog.yaml as data, as a node tree (to see quoting) and with key lines."""
    path = root / "cog.yaml"
    if not path.is_file():
        return Problem(path, None, "cog.yaml is missing; Cog needs it at the repository root")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return Problem(path, mark.line + 1 if mark else None, f"not valid YAML: {exc}")
    if not isinstance(data, dict) or node is None:
        return Problem(path, None, "cog.yaml must be a mapping with a 'build' key")
    return data, node, _key_lines(node)


@dataclass(frozen=True)
class Pin:
    """One package line of the Cog image, as ``packaging`` reads it (pip's own parser)."""

    text: str
    line: int | None
    requirement: Requirement | None  # None when ``text`` is not a valid requirement
    error: str = ""

    @property
    def name(self) -> str:
        return canonicalize_name(self.requirement.name) if self.requirement else ""

    @property
    def pinned(self) -> str | None:
        """The version of an exact ``name==version`` pin; None for any other specifier."""
        specifiers = list(self.requirement.specifier) if self.requirement else []
        if len(specifiers) == 1 and specifiers[0].operator == "==":
            version = specifiers[0].version
            return None if version.endswith(".*") else version
        return None


def parse_pin(text: str, line: int | None) -> Pin:
    try:
        return Pin(text, line, Requirement(text))
    except InvalidRequirement as exc:
        return Pin(text, line, None, str(exc))


def cog_requirements(root: Path) -> list[Pin] | None:
    """The image's Python packages (python_requirements file or python_packages), or None
    when cog.yaml or the requirements file it names cannot be read."""
    loaded = load_cog_yaml(root)
    if isinstance(loaded, Problem):
        return None
    build = loaded[0].get("build") or {}
    if isinstance(build.get("python_requirements"), str):
        path = root / build["python_requirements"]
        if not path.is_file():
            return None
        raw = list(enumerate(path.read_text(encoding="utf-8").splitlines(), start=1))
    elif isinstance(build.get("python_packages"), list):
        raw = [(None, str(line)) for line in build["python_packages"]]
    else:
        return []
    pins = []
    for line_no, line in raw:
        text = COMMENT.sub("", line).strip()
        if text and not text.startswith("-"):  # pip options (-r, --index-url) are not packages
            pins.append(parse_pin(text, line_no))
    return pins


@dataclass(frozen=True)
class Declared:
    """One requirement of pyproject.toml, kept with its text for messages."""

    text: str
    specifier: SpecifierSet


def project_pins(
    root: Path,
) -> tuple[dict[str, list[Declared]], set[str], dict[str, set[str]]]:
    """pyproject.toml: name -> declared requirements, the core names, and extra -> names."""
    data = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    project = data.get("project", {})
    specs: dict[str, list[Declared]] = {}
    groups = {"": project.get("dependencies", []), **project.get("optional-dependencies", {})}
    members: dict[str, set[str]] = {}
    for group, lines in groups.items():
        for line in lines:
            try:
                requirement = Requirement(line)
            except InvalidRequirement:
                continue  # pip refuses the whole file; not this check's to repeat
            name = canonicalize_name(requirement.name)
            specs.setdefault(name, []).append(Declared(line, requirement.specifier))
            members.setdefault(group, set()).add(name)
    return specs, members.get("", set()), members
