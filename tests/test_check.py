"""``python -m tools.check``: passes on the repository, names each planted mistake."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.files import copy_files, edit
from tests.servers import ROOT
from tools import check as check_command
from tools.checks import Problem
from tools.checks import lock as lock_check
from tools.checks import space as space_check

SPACE_FILES = ("README.md", "Dockerfile", "pyproject.toml", "requirements.lock")


def test_check_passes_on_the_repository() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tools.check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok: space, cog, modal, lock")


def test_check_runs_every_runtime_check() -> None:
    assert check_command.CHECK_MODULES == (
        "tools.checks.space",
        "tools.checks.cog",
        "tools.checks.modal",
        "tools.checks.lock",
    )


@pytest.fixture
def space_copy(tmp_path: Path) -> Path:
    return copy_files(SPACE_FILES, tmp_path)


def line_of(path: Path, fragment: str) -> int:
    lines = path.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if fragment in line)


def set_line(path: Path, fragment: str, text: str) -> int:
    """Replace the whole line that holds ``fragment`` by ``text``; return its number."""
    line = line_of(path, fragment)
    lines = path.read_text().splitlines(keepends=True)
    lines[line - 1] = f"{text}\n"
    path.write_text("".join(lines))
    return line


# Each mutation returns the "file:line: message start" the check must print for it.
Mutation = Callable[[Path], str]


def replacing(name: str, file: str, old: str, new: str, message: str, below: int = 0) -> Mutation:
    """The mutation ``name``: ``old`` becomes ``new`` in ``file``, and the check must name the
    edited line (``below`` lines further on: the line an edit inserts, or a continuation's
    start) with ``message``."""

    def mutation(root: Path) -> str:
        line = edit(root / file, old, new)
        return f"{file}:{line + below}: {message}"

    mutation.__name__ = name
    return mutation


def app_port_mismatch(root: Path) -> str:
    line = edit(root / "README.md", "app_port: 8000", "app_port: 7860")
    expose = line_of(root / "Dockerfile", "EXPOSE")
    assert line > 0
    return f"Dockerfile:{expose}: EXPOSE 8000, but the front matter's app_port is 7860"


def missing_user(root: Path) -> str:
    dockerfile = root / "Dockerfile"
    kept = [line for line in dockerfile.read_text().splitlines() if not line.startswith("USER ")]
    dockerfile.write_text("\n".join(kept) + "\n")
    last = len(root.joinpath("Dockerfile").read_text().rstrip().splitlines())
    return f"Dockerfile:{last}: no USER instruction: the Space runs the container as uid 1000"


def root_user(root: Path) -> str:
    dockerfile = root / "Dockerfile"
    lines = dockerfile.read_text().splitlines(keepends=True)
    last = max(i for i, line in enumerate(lines) if line.startswith("USER "))
    lines[last] = "USER root\n"
    dockerfile.write_text("".join(lines))
    return f"Dockerfile:{last + 1}: the final USER is 'root', which is not uid 1000"


def long_description(root: Path) -> str:
    line = set_line(root / "README.md", "short_description:", "short_description: " + "x" * 61)
    return f"README.md:{line}: short_description must be at most 60 characters"


def no_front_matter(root: Path) -> str:
    readme = root / "README.md"
    readme.write_text(readme.read_text().split("---\n", 2)[2])
    return "README.md:1: no front matter"


def cache_outside_home(root: Path) -> str:
    edit(root / "Dockerfile", "HF_HOME=/home/user/.cache/huggingface", "HF_HOME=/data/hf")
    env = line_of(root / "Dockerfile", "ENV HOME=")
    return f"Dockerfile:{env}: HF_HOME=/data/hf is outside HOME=/home/user"


def invalid_yaml(root: Path) -> str:
    edit(root / "README.md", "colorTo: pink", "colorTo: [pink")
    after = line_of(root / "README.md", "colorTo:") + 1  # YAML notices on the next line
    return f"README.md:{after}: the front matter is not valid YAML"


def front_matter_not_a_mapping(root: Path) -> str:
    readme = root / "README.md"
    front, body = readme.read_text().split("---\n", 2)[1:]
    listed = "".join(f"- {line}\n" for line in front.splitlines())  # a list, not a mapping
    readme.write_text(f"---\n{listed}---\n{body}")
    return "README.md:2: the front matter must be a YAML mapping"


def unknown_hardware(root: Path) -> str:
    line = set_line(root / "README.md", "suggested_hardware:", "suggested_hardware: gpu-large")
    return f"README.md:{line}: suggested_hardware must be one of cpu-basic"


def blackwell_without_its_cuda(root: Path) -> str:
    edit(root / "README.md", "suggested_hardware: l4x1", "suggested_hardware: rtx-pro-6000")
    line = line_of(root / "Dockerfile", "ARG TORCH_CUDA=cu126")
    return f"Dockerfile:{line}: suggested_hardware rtx-pro-6000 is a Blackwell GPU"


MUTATIONS = [
    replacing(
        "port_mismatch",
        "Dockerfile",
        '"--port", "8000"]',
        '"--port", "7860"]',
        "CMD serves on port 7860, but the front matter's app_port is 8000",
    ),
    app_port_mismatch,
    replacing(
        "quoted_app_port",
        "README.md",
        "app_port: 8000",
        'app_port: "8000"',
        "app_port must be an integer (no quotes), got '8000'",
    ),
    missing_user,
    root_user,
    replacing(
        "hex_colour",
        "README.md",
        "colorFrom: indigo",
        'colorFrom: "#4f46e5"',
        "colorFrom must be one of red, yellow, green",
    ),
    replacing(
        "secret_in_env",
        "Dockerfile",
        "EXPOSE 8000",
        "ENV HF_TOKEN=hf_example\nEXPOSE 8000",
        "ENV HF_TOKEN looks like a secret",
    ),
    replacing(
        "secret_in_arg",
        "Dockerfile",
        "ARG MODEL=mock",
        "ARG MODEL=mock\nARG AUTH_TOKEN",
        "ARG AUTH_TOKEN looks like a secret",
        below=1,
    ),
    replacing(
        "localhost_bind",
        "Dockerfile",
        '"--host", "0.0.0.0"',
        '"--host", "127.0.0.1"',
        "CMD binds host 127.0.0.1, which the Space's proxy cannot reach",
    ),
    long_description,
    replacing("gradio_sdk", "README.md", "sdk: docker", "sdk: gradio", "sdk must be 'docker'"),
    no_front_matter,
    replacing(
        "license_mismatch",
        "README.md",
        "license: apache-2.0",
        "license: mit",
        "license must be the Hub id of pyproject.toml's 'Apache-2.0'",
    ),
    cache_outside_home,
    unknown_hardware,
    invalid_yaml,
    front_matter_not_a_mapping,
    replacing(
        "hadolint_finding",
        "Dockerfile",
        "FROM nvidia/cuda:12.6.3-base-ubuntu22.04",
        "FROM cuda:latest",
        "hadolint DL3007 (warning): Using latest",
    ),
    replacing(  # the problem is named at the RUN that starts the continued line
        "install_without_the_lock",
        "Dockerfile",
        "-c /opt/project/requirements.lock",
        "",
        "'pip install -r /opt/project/pyproject.toml --extra diffusers",
        below=-1,
    ),
    blackwell_without_its_cuda,
    replacing(
        "malformed_preload",
        "README.md",
        "pinned: false",
        "pinned: false\npreload_from_hub:\n  - sd turbo",
        "preload_from_hub entry 'sd turbo' is not 'owner/repo",
        below=1,
    ),
]


def test_the_space_copy_starts_clean(space_copy: Path) -> None:
    assert space_check.check(space_copy) == []


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.__name__)
def test_check_names_each_planted_mistake(
    mutation: Mutation, space_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = mutation(space_copy)
    assert check_command.main([str(space_copy)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith(expected) for line in out), (
        f"expected a line starting with {expected!r}, got:\n" + "\n".join(out)
    )


def test_a_missing_check_module_fails_loudly(
    monkeypatch: pytest.MonkeyPatch, space_copy: Path
) -> None:
    monkeypatch.setattr(check_command, "CHECK_MODULES", ("tools.checks.space", "tools.checks.nope"))
    problems = check_command.run_checks(space_copy)
    assert [p.message for p in problems] == [
        "the check module tools.checks.nope is missing from this checkout"
    ]


def test_check_refuses_a_root_that_is_not_a_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check_command.main([str(tmp_path / "nowhere")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_problem_prints_file_and_line() -> None:
    assert str(Problem(Path("Dockerfile"), 3, "bad")) == "Dockerfile:3: bad"
    assert str(Problem(Path("Dockerfile"), None, "bad")) == "Dockerfile: bad"


def test_dockerfile_parser_joins_continuations_and_skips_heredocs(tmp_path: Path) -> None:
    text = (
        "FROM a AS b\n"
        "# a comment\n"
        "ENV A=1 \\\n"
        "    # inside\n"
        "    B=2\n"
        "RUN <<EOF\n"
        "USER root\n"
        "EOF\n"
        'CMD ["python", "-m", "x"]\n'
        "CMD python -m y --port 9\n"
    )
    (tmp_path / "Dockerfile").write_text(text)
    parsed = space_check.parse_dockerfile(tmp_path / "Dockerfile")
    assert isinstance(parsed, list), parsed
    assert [(c.start_line, space_check.keyword(c)) for c in parsed] == [
        (1, "FROM"),
        (3, "ENV"),
        (6, "RUN"),
        (9, "CMD"),
        (10, "CMD"),
    ]
    assert parsed[1].value == ("A", "1", "B", "2")
    assert space_check.arguments(parsed[3]) == ["python", "-m", "x"]
    assert space_check.arguments(parsed[4]) == ["python", "-m", "y", "--port", "9"]


def test_a_user_line_inside_a_heredoc_is_not_the_final_user(space_copy: Path) -> None:
    dockerfile = space_copy / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "RUN <<EOF\nUSER root\nEOF\n")
    assert space_check.check(space_copy) == []


def test_hardware_names_are_the_ones_the_hub_client_knows() -> None:
    from huggingface_hub import SpaceHardware

    assert tuple(h.value for h in SpaceHardware) == space_check.HARDWARE
    assert "cpu-basic" in space_check.HARDWARE and "l4x1" in space_check.HARDWARE


def test_secret_names_are_whole_words_not_substrings() -> None:
    from tools.checks.space import looks_secret

    for name in ("HF_TOKEN", "AUTH_TOKEN", "SECRET_KEY", "MY_API_KEY", "DB_PASSWORD"):
        assert looks_secret(name), name
    for name in ("TOKENIZERS_PARALLELISM", "HF_TOKEN_PATH", "SECRETARY", "MODEL"):
        assert not looks_secret(name), name


# -- requirements.lock ------------------------------------------------------------------------


@pytest.fixture
def lock_copy(tmp_path: Path) -> Path:
    return copy_files(("pyproject.toml", "requirements.lock"), tmp_path)


def test_the_lock_copy_starts_clean(lock_copy: Path) -> None:
    assert lock_check.check(lock_copy) == []


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "pyproject.toml",
            '"numpy>=1.26,<3"',
            '"numpy>=1.26,<3",\n    "left-pad>=1"',
            "left-pad is a dependency in pyproject.toml that requirements.lock does not pin",
        ),
        (
            "pyproject.toml",
            '"pillow>=11,<13"',
            '"pillow>=11,<12"',
            "pillow==12.3.0 is outside pyproject.toml's 'pillow>=11,<12'; run `make lock`",
        ),
        (
            "requirements.lock",
            "accelerate==1.16.0",
            "torch==2.13.0\naccelerate==1.16.0",
            "torch must stay out of the lock",
        ),
        (
            "requirements.lock",
            "accelerate==1.16.0",
            "nvidia-cublas==13.1.1.3\naccelerate==1.16.0",
            "nvidia-cublas must stay out of the lock",
        ),
        ("requirements.lock", "accelerate==1.16.0", "accelerate>=1", "'accelerate>=1' is not"),
    ],
)
def test_the_lock_check_names_each_drift(
    lock_copy: Path, file: str, old: str, new: str, expected: str
) -> None:
    edit(lock_copy / file, old, new)
    messages = [str(p) for p in lock_check.check(lock_copy)]
    assert any(expected in m for m in messages), messages


def test_a_missing_lock_is_a_problem(lock_copy: Path) -> None:
    (lock_copy / "requirements.lock").unlink()
    (problem,) = lock_check.check(lock_copy)
    assert "requirements.lock is missing" in problem.message and "make lock" in problem.message


def test_the_lock_leaves_torch_to_each_runtime() -> None:
    """CI installs the Makefile's torch (a CPU build) first; the images their CUDA builds."""
    lock = lock_check.read_lock(ROOT)
    assert lock is not None
    assert not [name for name in lock.pins if lock_check.UNLOCKED.match(name)]
    # torch's own dependencies are pinned (`make lock` resolves them for the Makefile's torch).
    assert {"sympy", "networkx", "filelock", "fsspec", "jinja2"} <= set(lock.pins)
