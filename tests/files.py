"""Copies of the repository's deployment files in a temp dir, with one planted change each."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from tests.servers import ROOT


def copy_files(names: Iterable[str], dest: Path) -> Path:
    """Copy repository files (by relative name) into ``dest`` and return ``dest``."""
    for name in names:
        shutil.copy(ROOT / name, dest / name)
    return dest


def edit(path: Path, old: str, new: str) -> int:
    """Replace the first ``old`` (in README.md, the front matter's) and return its line."""
    text = path.read_text()
    assert old in text, f"{old!r} does not occur in {path.name}"
    path.write_text(text.replace(old, new, 1))
    return text[: text.index(old)].count("\n") + 1
