"""The command line, run as a user would: a real subprocess writing real files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from inference.engine import Engine
from inference.images import decode
from inference.models.mock import MockModel
from inference.schema import GenerateRequest
from inference.settings import Settings
from tests.servers import ROOT


def cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inference", *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_predict_writes_the_same_png_as_the_engine(tmp_path: Path) -> None:
    done = cli(
        "predict",
        "--prompt",
        "a red fox",
        "--seed",
        "42",
        "--prompt-weight",
        "0.7",
        "-o",
        "out.png",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "out.png  seed=42  256x256" in done.stdout
    engine = Engine(MockModel(), Settings()).start()
    expected = engine.generate(GenerateRequest(prompt="a red fox", seed=42, prompt_weight=0.7))
    engine.stop()
    assert (tmp_path / "out.png").read_bytes() == expected.images[0].data


def test_predict_several_images_with_format_from_the_extension(tmp_path: Path) -> None:
    done = cli(
        "predict",
        "--seed",
        "7",
        "--num-outputs",
        "3",
        "--width",
        "64",
        "--height",
        "72",
        "-o",
        "imgs/fox.webp",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    paths = [tmp_path / "imgs" / f"fox-{i}.webp" for i in range(3)]
    assert [decode(p.read_bytes()).shape for p in paths] == [(72, 64, 3)] * 3
    assert "seed=9" in done.stdout and "step" in done.stderr  # progress bar on stderr


def test_predict_bad_input_is_one_clear_line_not_a_traceback(tmp_path: Path) -> None:
    done = cli("predict", "--width", "1004", "-o", "x.png", cwd=tmp_path)
    assert done.returncode == 2
    assert "error: width must be a multiple of 8, got 1004" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "x.png").exists()


def test_predict_missing_weights_names_the_path(tmp_path: Path) -> None:
    done = cli("predict", "--weights-path", "nope.json", "-o", "x.png", cwd=tmp_path)
    assert done.returncode == 1
    assert "nope.json" in done.stderr and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_settings_name_the_variable_and_never_print_the_token(tmp_path: Path) -> None:
    done = cli("serve", cwd=tmp_path, AUTH_TOKEN="s3cr3t-value", DEFAULT_STEPS="120")
    assert done.returncode == 2
    assert "error: DEFAULT_STEPS=120 exceeds MAX_STEPS=100" in done.stderr
    assert "s3cr3t-value" not in done.stderr and "Traceback" not in done.stderr


def test_log_level_reaches_the_packages_own_logs(tmp_path: Path) -> None:
    args = ("predict", "--steps", "2", "--width", "64", "--height", "64", "-q", "-o", "x.png")
    quiet = cli(*args, cwd=tmp_path, LOG_LEVEL="warning")
    assert quiet.returncode == 0 and "INFO inference" not in quiet.stderr
    chatty = cli(*args, cwd=tmp_path, LOG_LEVEL="info")
    assert "INFO inference.engine: model 'mock' ready" in chatty.stderr


def test_predict_output_mistakes_are_one_line_each(tmp_path: Path) -> None:
    small = ("predict", "--steps", "2", "--width", "64", "--height", "64", "-q")
    for args, text in (
        (("-o", "x.gif"), ".gif is not an image type"),
        (("--format", "jpeg", "-o", "x.png"), "--format jpeg but -o x.png is png"),
        (("-o", "/proc/no/x.png"), "cannot write /proc/no/x.png"),
    ):
        done = cli(*small, *args, cwd=tmp_path)
        assert done.returncode != 0 and text in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    (tmp_path / "shots").mkdir()
    done = cli(*small, "-o", "shots", cwd=tmp_path)
    assert done.returncode == 0 and (tmp_path / "shots" / "out.png").is_file()


def test_the_shipped_package_imports_no_tooling() -> None:
    """The runtime entry points (and every CLI subcommand) load without the tools' dependencies:
    pyyaml and packaging are only in the ``tools`` extra, and ``tools/`` is not shipped."""
    code = (
        "import sys, inference.app, inference.cli, inference.engine;"
        "inference.cli.build_parser();"
        "print([m for m in ('yaml', 'packaging', 'tools') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
