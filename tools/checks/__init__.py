"""Deployment-contract checks: each runtime's files checked against what its platform accepts.

Each module here (``space``, ``cog``, ``modal``) exposes ``check(root: Path) -> list[Problem]``;
``python -m tools.check`` runs them all and prints every problem with its file and line.
These checks read files as text, YAML or Python AST: they never import ``modal`` or ``cog``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One broken rule, located as precisely as the file format allows."""

    file: Path
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        return f"{where}: {self.message}"


def module_constants(tree: ast.Module) -> dict[str, ast.expr]:
    """The module's top-level ``NAME = value`` assignments, by name.

    A declaration may name a module constant instead of spelling a literal; the checks follow
    such a name to its value, as the platform's own static reading of the file does.
    """
    return {
        target.id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
