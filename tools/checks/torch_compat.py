"""No torch API newer than the Cog image's torch in ``inference/``.

Local tests run torch 2.13, but Replicate's CUDA 11.8 image gets torch 2.7.1 (the last release
PyTorch built for CUDA 11.8), so a newer torch API would pass every local test and break only
after ``cog push``. This check reads every module under ``inference/`` as an AST, resolves each
``torch.…`` attribute chain through the file's imports (``import torch as t``,
``from torch import nn``, ``import torch.nn.functional as F``) and allows only the names recorded
for that release in ``tools/checks/torch_api.py``. It also fails when requirements-cog.txt
pins another torch than the one the list was recorded for, so the two never drift apart.

Method calls on tensors (``x.mul_()``) cannot be resolved without types and are not checked.
A line that uses a newer name behind a runtime guard (``hasattr``) can say so with
``# torch-compat: guarded``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tools.checks import Problem
from tools.checks.cog_files import cog_requirements
from tools.checks.torch_api import ALLOWED, TORCH_VERSION, implied_modules

GUARD_PRAGMA = "# torch-compat: guarded"


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> the torch path it stands for, from every import in the module."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "torch" or alias.name.startswith("torch."):
                    if alias.asname:
                        aliases[alias.asname] = alias.name
                    else:  # ``import torch.cuda`` binds ``torch``
                        aliases["torch"] = "torch"
        elif _from_torch(node):
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def _from_torch(node: ast.AST) -> bool:
    """``from torch… import …`` (absolute imports only)."""
    return (
        isinstance(node, ast.ImportFrom)
        and node.level == 0
        and node.module is not None
        and (node.module == "torch" or node.module.startswith("torch."))
    )


def _chain(node: ast.Attribute) -> tuple[str, list[str]] | None:
    """``a.b.c`` -> ("a", ["b", "c"]); None when the chain does not start at a plain name."""
    attrs: list[str] = []
    current: ast.expr = node
    while isinstance(current, ast.Attribute):
        attrs.append(current.attr)
        current = current.value
    if not isinstance(current, ast.Name):
        return None
    return current.id, attrs[::-1]


def torch_names(source: str) -> list[tuple[int, str]]:
    """Every torch name a module uses, as (line, dotted name), outermost chains only."""
    tree = ast.parse(source)
    aliases = _aliases(tree)
    if not aliases:
        return []
    found: list[tuple[int, str]] = []
    inner: set[int] = set()
    for node in ast.walk(tree):
        if _from_torch(node):
            assert isinstance(node, ast.ImportFrom)
            found.extend((node.lineno, f"{node.module}.{a.name}") for a in node.names)
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names if a.name.startswith("torch."))
        elif isinstance(node, ast.Attribute) and id(node) not in inner:
            if isinstance(node.value, ast.Attribute):
                inner.add(id(node.value))
            chain = _chain(node)
            if chain is None or chain[0] not in aliases:
                continue
            # mark the whole inner chain so only the outermost attribute is reported
            current: ast.expr = node.value
            while isinstance(current, ast.Attribute):
                inner.add(id(current))
                current = current.value
            found.append((node.lineno, ".".join([aliases[chain[0]], *chain[1]])))
    return sorted(set(found))


def _pinned_torch(root: Path) -> str | None:
    for requirement in cog_requirements(root) or []:
        if requirement.name == "torch":
            return requirement.pinned
    return None


def check(root: Path) -> list[Problem]:
    """Problems for every torch name in ``root/inference`` that torch 2.7.1 lacks."""
    problems: list[Problem] = []
    pinned = _pinned_torch(root)
    if pinned is not None and pinned != TORCH_VERSION:
        problems.append(
            Problem(
                root / "inference" / "checks" / "torch_api.py",
                None,
                f"the allowed torch API was recorded for torch {TORCH_VERSION}, but the Cog "
                f"image pins torch=={pinned}; re-record ALLOWED and TORCH_VERSION for {pinned}",
            )
        )
    allowed = ALLOWED | implied_modules()
    package = root / "inference"
    for path in sorted(package.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        try:
            names = torch_names(source)
        except SyntaxError as exc:
            problems.append(Problem(path, exc.lineno, f"cannot parse: {exc.msg}"))
            continue
        for line, name in names:
            if name in allowed or GUARD_PRAGMA in lines[line - 1]:
                continue
            problems.append(
                Problem(
                    path,
                    line,
                    f"{name} is not in the torch {TORCH_VERSION} API that Cog's CUDA 11.8 image "
                    f"installs; use an older equivalent, guard it at run time (and mark the "
                    f"line '{GUARD_PRAGMA}'), or, if torch {TORCH_VERSION} has it, record it "
                    f"in tools/checks/torch_api.py",
                )
            )
    return problems
