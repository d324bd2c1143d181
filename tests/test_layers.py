"""The import-linter contracts of pyproject.toml hold, and each kind of breakage fails them.

`make test` and `make lint` run `lint-imports` on the tree. These tests run it on a scratch copy
of inference/ with one deliberate bad import each, so a contract that could never fail (a typo
in a module name, a layer listed twice, indirect imports allowed where they should not be) is
caught here rather than trusted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: `lint-imports` through this interpreter, so the test finds it in whichever venv runs pytest.
LINT = "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` with the configuration and the package found under ``root``."""
    path = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.run(
        [sys.executable, "-c", LINT, "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A copy of the package and its contracts, free to break."""
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "inference", tmp_path / "inference", ignore=skip)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " broken" in result.stdout and "0 broken" in result.stdout


def test_the_scratch_copy_keeps_them_too(scratch: Path) -> None:
    """The breakages below fail because of the one line each adds, not because of the copy."""
    result = lint_imports(scratch)
    assert result.returncode == 0, result.stdout + result.stderr


# (file, the line it gains, the contract that must break)
BREAKAGES = {
    "upward import": (
        "schema.py",
        "from inference import service",
        "inference/ layers point down only",
    ),
    "siblings that must stay apart": (
        "validation.py",
        "from inference.engine import core",
        "inference/ layers point down only",
    ),
    "a module placed in no layer": (
        "registry_of_nothing.py",
        "from inference import errors",
        "inference/ layers point down only",
    ),
    "a plumbing module reaching up to the app": (
        "http/forms.py",
        "from inference.http import app",
        "inside http/: the app assembles protocols",
    ),
    "one protocol importing another": (
        "http/protocols/openai/routes.py",
        "from inference.http.protocols.replicate import routes",
        "protocol packages are independent of each other",
    ),
    "a runtime import, lazy inside a function": (
        "engine/core.py",
        "def _stage():\n    import modal\n",
        "inference/ never imports a runtime adapter or repo tooling",
    ),
    "repo tooling": (
        "service.py",
        "import tools.check",
        "inference/ never imports a runtime adapter or repo tooling",
    ),
    "a web framework below the front doors": (
        "predictions/record.py",
        "import fastapi",
        "below the front doors nothing imports a web framework",
    ),
    "an ML library in the foundations, even lazily": (
        "settings/model.py",
        "def _device():\n    import torch\n",
        "foundations import no framework and no ML library",
    ),
    "torch outside the model backends": (
        "images.py",
        "import torch",
        "only the model backends import torch, diffusers or transformers",
    ),
}


@pytest.mark.parametrize("case", BREAKAGES, ids=list(BREAKAGES))
def test_a_bad_import_breaks_its_contract(scratch: Path, case: str) -> None:
    name, line, contract = BREAKAGES[case]
    path = scratch / "inference" / name
    source = path.read_text() if path.exists() else ""
    path.write_text(f"{source}\n{line}\n")
    result = lint_imports(scratch)
    assert result.returncode != 0, result.stdout
    broken = [row for row in result.stdout.splitlines() if row.endswith(" BROKEN")]
    assert [row for row in broken if row.startswith(contract)], result.stdout
