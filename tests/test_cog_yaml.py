"""The Cog contract checks: cog.yaml, requirements-cog.txt, predict.py and the torch API.

Each rule is shown to pass on the repository's own files and to fail, with a message naming the
value and the fix, on a copy with exactly one thing broken.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.files import copy_files, edit
from tests.servers import ROOT
from tools.checks import Problem, cog, torch_api, torch_compat

FILES = ("cog.yaml", "requirements-cog.txt", "predict.py", "pyproject.toml", "requirements.lock")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the files the Cog check reads (no inference/ package: torch scan is empty)."""
    return copy_files(FILES, tmp_path)


def _messages(problems: list[Problem]) -> list[str]:
    return [str(p) for p in problems]


def test_the_repository_passes() -> None:
    assert _messages(cog.check(ROOT)) == []


def test_the_copy_passes(repo: Path) -> None:
    assert _messages(cog.check(repo)) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('predict: "predict.py', 'predcit: "predict.py', "predcit is not a key Cog knows"),
        ("  gpu: true", "  gpus: true", "build.gpus is not a key Cog knows"),
        ("  gpu: true", '  gpu: "yes"', "build.gpu must be boolean, got 'yes'"),
        ('  cuda: "11.8"', "  cuda: 11.8", "build.cuda must be string, got 11.8"),
        ("  max: 8", "  maximum: 8", "concurrency needs the key 'max'"),
    ],
)
def test_unknown_keys_and_wrong_types(repo: Path, old: str, new: str, expected: str) -> None:
    edit(repo / "cog.yaml", old, new)
    problems = cog.check(repo)
    assert any(expected in p.message for p in problems), _messages(problems)
    assert all(p.line is not None for p in problems if expected in p.message)


def test_python_version_must_be_present_and_quoted(repo: Path) -> None:
    edit(repo / "cog.yaml", 'python_version: "3.11"', "python_version: 3.10")
    (problem,) = cog.check(repo)
    lines = (repo / "cog.yaml").read_text().splitlines()
    assert lines[problem.line - 1].startswith("  python_version: 3.10")
    assert 'must be quoted ("3.10")' in problem.message and "3.1" in problem.message

    edit(repo / "cog.yaml", "python_version: 3.10", "python_versions: 3.11")
    messages = " | ".join(_messages(cog.check(repo)))
    assert "python_version is required" in messages


def test_concurrency_needs_python_3_11(repo: Path) -> None:
    edit(repo / "cog.yaml", 'python_version: "3.11"', 'python_version: "3.10"')
    (problem,) = cog.check(repo)
    assert "Python >= 3.11 with concurrency.max > 1, got 3.10" in problem.message


def test_torch_must_have_a_build_for_the_cuda(repo: Path) -> None:
    line = edit(repo / "requirements-cog.txt", "torch==2.7.1", "torch==2.8.0")
    messages = _messages(cog.check(repo))
    assert any(
        "torch==2.8.0 has no CUDA 11.8 build; CUDA 11.8 supports torch 2.0.0 to 2.7.1" in m
        for m in messages
    ), messages
    assert any(f"requirements-cog.txt:{line}:" in m for m in messages), messages


def test_predict_must_name_an_existing_class(repo: Path) -> None:
    edit(repo / "cog.yaml", "predict.py:Predictor", "predict.py:Predicter")
    (problem,) = cog.check(repo)
    assert "class 'Predicter', which predict.py does not define" in problem.message
    assert "Predictor" in problem.message  # says what is there

    edit(repo / "cog.yaml", "predict.py:Predicter", "predictor.py:Predictor")
    (problem,) = cog.check(repo)
    assert "predictor.py, which does not exist" in problem.message


def test_inputs_must_be_statically_resolvable(repo: Path) -> None:
    edit(
        repo / "predict.py",
        'default=1, ge=1, le=4, description="Images to generate."',
        'default=1, ge=1, le=schema.NUM_OUTPUTS_MAX, description="Images to generate."',
    )
    (problem,) = cog.check(repo)
    assert problem.file.name == "predict.py" and problem.line is not None
    assert "cannot resolve 'schema.NUM_OUTPUTS_MAX'" in problem.message


def test_concurrency_must_agree_and_needs_async(repo: Path) -> None:
    edit(repo / "cog.yaml", "  max: 8", "  max: 4")
    (problem,) = cog.check(repo)
    assert "concurrency.max is 4 but predict.py:Predictor declares @concurrent(max=8)" in (
        problem.message
    )

    edit(repo / "cog.yaml", "  max: 4", "  max: 8")
    edit(repo / "predict.py", "    @concurrent(max=MAX_CONCURRENCY)\n", "")
    edit(repo / "predict.py", "async def predict(", "def predict(")
    (problem,) = cog.check(repo)
    assert "needs an async predict()/run()" in problem.message


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("pillow==12.3.0", "pillow==13.0.0", "pillow==13.0.0 is outside pyproject.toml's"),
        ("numpy==2.4.6", "numpy>=2", "'numpy>=2' must be an exact pin"),
        ("numpy==2.4.6", "# numpy==2.4.6", "numpy is a dependency in pyproject.toml but the Cog"),
        ("scipy==1.17.1", "scipy==1.17.1\nleft-pad==1.0", "left-pad is in neither pyproject.toml"),
        ("scipy==1.17.1", "scipy==1.17.1\ncog==0.23.1", "cog build replaces cog"),
        (
            "anyio==4.16.0",
            "anyio==4.15.0",
            "anyio==4.15.0 but requirements.lock pins anyio==4.16.0",
        ),
        ("pillow==12.3.0", "pillow==12.2.0", "pillow==12.2.0 but requirements.lock pins pillow=="),
        ("scipy==1.17.1", "scipy==1.17.1\ntriton==3.3.1", "triton comes with torch's CUDA build"),
        ("numpy==2.4.6", "numpy=2.4.6", "'numpy=2.4.6' is not a requirement pip can read"),
    ],
)
def test_requirements_agree_with_pyproject(repo: Path, old: str, new: str, expected: str) -> None:
    edit(repo / "requirements-cog.txt", old, new)
    messages = _messages(cog.check(repo))
    assert any(expected in m for m in messages), messages


def test_a_hash_inside_a_requirement_is_not_a_comment(repo: Path) -> None:
    """pip's rule: only a '#' at the start or after whitespace starts a comment."""
    edit(repo / "requirements-cog.txt", "numpy==2.4.6", "numpy==2.4.6  # the array library")
    assert _messages(cog.check(repo)) == []
    edit(repo / "requirements-cog.txt", "numpy==2.4.6  #", "numpy==2.4.6#")
    messages = _messages(cog.check(repo))
    assert any("'numpy==2.4.6#" in m and "not a requirement pip can read" in m for m in messages)


def test_the_schema_is_a_valid_draft7_schema() -> None:
    from jsonschema import Draft7Validator

    Draft7Validator.check_schema(cog.COG_YAML_SCHEMA)


def test_the_torch_check_does_not_import_the_cog_check() -> None:
    """No import circle: both read Cog's files through cog_files."""
    code = (
        "import sys, tools.checks.torch_compat;"
        "print('tools.checks.cog' in sys.modules, 'tools.checks.cog_files' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["False", "True"]


def test_the_sdk_version_is_pinned_to_the_tested_cog(repo: Path) -> None:
    edit(repo / "cog.yaml", 'sdk_version: "0.23.1"', 'sdk_version: "0.22.0"')
    (problem,) = cog.check(repo)
    assert "build.sdk_version is 0.22.0 but pyproject.toml pins cog==0.23.1" in problem.message

    edit(repo / "cog.yaml", '  sdk_version: "0.22.0"\n', "")
    (problem,) = cog.check(repo)
    assert 'installs the latest SDK, not the 0.23.1 the tests run; add sdk_version: "0.23.1"' in (
        problem.message
    )


def test_descriptions_must_be_one_string_literal(repo: Path) -> None:
    edit(repo / "predict.py", 'description="What to draw."', 'description="What " "to draw."')
    (problem,) = cog.check(repo)
    assert problem.file.name == "predict.py" and "must be one string literal" in problem.message


# -- torch API newer than the image's torch ---------------------------------------------------


def test_newer_torch_apis_are_caught(tmp_path: Path) -> None:
    for name in FILES:
        shutil.copy(ROOT / name, tmp_path / name)
    package = tmp_path / "inference" / "models"
    package.mkdir(parents=True)
    (package / "new.py").write_text(
        "import torch\n"
        "import torch as T\n"
        "from torch import float8_e8m0fnu\n"
        "from torch.nn import functional as F\n"
        "x = torch.zeros(3, dtype=torch.float4_e2m1fn_x2)\n"
        "T.accelerator.current_accelerator().type\n"
        "F.interpolate(x)\n"
        "y = torch.newer_api(1)  # torch-compat: guarded\n"
    )
    found = [(p.line, p.message.split(" ")[0]) for p in torch_compat.check(tmp_path)]
    assert found == [
        (3, "torch.float8_e8m0fnu"),
        (5, "torch.float4_e2m1fn_x2"),
        (6, "torch.accelerator.current_accelerator"),
    ]
    # ... and python -m tools.check reports them through the cog check
    assert len([p for p in cog.check(tmp_path) if p.file.name == "new.py"]) == 3


def test_the_recorded_torch_must_be_the_pinned_one(repo: Path) -> None:
    edit(repo / "requirements-cog.txt", "torch==2.7.1", "torch==2.6.0")
    (problem,) = torch_compat.check(repo)
    assert "recorded for torch 2.7.1, but the Cog image pins torch==2.6.0" in problem.message


def test_every_allowed_name_exists_in_torch() -> None:
    """Guards the list against typos (names present in 2.7.1 are still present today)."""
    import torch  # noqa: F401

    missing = []
    for name in sorted(torch_api.ALLOWED):
        module_name, _, attr = name.rpartition(".")
        try:
            owner = importlib.import_module(module_name)
        except ModuleNotFoundError:
            parent, _, child = module_name.rpartition(".")
            owner = getattr(importlib.import_module(parent), child)
        if not hasattr(owner, attr):
            missing.append(name)
    assert missing == []


def test_inline_python_packages_are_checked_too(repo: Path) -> None:
    """The deprecated build.python_packages form gets the same pin and CUDA rules."""
    packages = [
        line
        for line in (repo / "requirements-cog.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    listed = "\n".join(f'    - "{p}"' for p in packages).replace("torch==2.7.1", "torch==2.9.0")
    edit(
        repo / "cog.yaml",
        "  python_requirements: requirements-cog.txt\n",
        f"  python_packages:\n{listed}\n",
    )
    messages = _messages(cog.check(repo))
    assert any("cog.yaml" in m and "torch==2.9.0 has no CUDA 11.8 build" in m for m in messages)
