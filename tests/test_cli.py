"""The command line, run as a user would: a real subprocess writing real files."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from inference.cli import build_parser, main
from inference.codec import decode
from inference.models.mock import MockModel
from inference.schema import GenerateRequest, Scheduler
from inference.service import Service
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
    service = Service(MockModel(), Settings()).start()
    expected = service.generate(GenerateRequest(prompt="a red fox", seed=42, prompt_weight=0.7))
    service.stop()
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


def test_predict_takes_image_files_by_path(tmp_path: Path) -> None:
    from tests.test_img2img import half_mask, photo, png

    (tmp_path / "photo.png").write_bytes(png(photo()))
    (tmp_path / "mask.png").write_bytes(png(half_mask()))
    args = ("--seed", "4", "--steps", "5", "--prompt-strength", "0.6", "-q", "-o", "out.png")
    done = cli("predict", "--image", "photo.png", "--mask", "mask.png", *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "out.png  seed=4  96x64" in done.stdout  # the image's own size
    service = Service(MockModel(), Settings()).start()
    request = {
        "seed": 4,
        "steps": 5,
        "strength": 0.6,
        "image": png(photo()),
        "mask": png(half_mask()),
    }
    expected = service.generate(request)
    service.stop()
    assert (tmp_path / "out.png").read_bytes() == expected.images[0].data
    missing = cli("predict", "--image", "nope.png", "-o", "x.png", cwd=tmp_path)
    assert missing.returncode == 2 and "argument --image: cannot read nope.png" in missing.stderr
    swapped = cli(
        "predict", "--image", "mask.png", "--mask", "photo.png", "-o", "x.png", cwd=tmp_path
    )
    assert swapped.returncode == 0  # any two images of one size will do
    (tmp_path / "notes.txt").write_text("not an image")
    bad = cli("predict", "--image", "notes.txt", "-o", "x.png", cwd=tmp_path)
    assert bad.returncode == 2 and "error: image is not an image this server reads" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_predict_missing_weights_names_the_path(tmp_path: Path) -> None:
    done = cli("predict", "--weights-path", "nope.json", "-o", "x.png", cwd=tmp_path)
    assert done.returncode == 1
    assert "nope.json" in done.stderr and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr
    (tmp_path / "bad.json").write_text('{"gamma": "x", "beta": 0.1}')
    done = cli("predict", "--weights-path", "bad.json", "-q", "-o", "x.png", cwd=tmp_path)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1 and len(errors) == 1, done.stderr
    assert "bad.json" in errors[0] and "'gamma' must be a finite number" in errors[0]
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
    assert "INFO inference.engine.core: model 'mock' ready" in chatty.stderr


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


def test_a_command_whose_extra_is_missing_says_which_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "huggingface_hub" else real(name, *a),
    )
    assert main(["download", "stabilityai/sd-turbo"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "error: python -m inference download needs the optional 'diffusers' extra: "
        "pip install 'diffusion-serve[diffusers]' (from a checkout: pip install -e '.[diffusers]')"
    ]


def test_predict_has_a_flag_for_every_request_field() -> None:
    """Derived from the schema: a new GenerateRequest field is a new flag with no CLI edit."""
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    predict = commands.choices["predict"]
    flags = {action.dest: action for action in predict._actions}
    assert set(GenerateRequest.model_fields) <= set(flags)
    assert tuple(flags["scheduler"].choices) == get_args(Scheduler)
    assert "--format" in flags["output_format"].option_strings
    assert "--prompt-strength" in flags["strength"].option_strings
    assert flags["image"].metavar == "PATH" and flags["mask"].metavar == "PATH"
    assert flags["steps"].type is int and flags["prompt_weight"].type is float


def test_the_shipped_package_imports_no_tooling() -> None:
    """The runtime entry points (and every CLI subcommand) load without the tools' dependencies:
    pyyaml and packaging are only in the ``tools`` extra, and ``tools/`` is not shipped."""
    code = (
        "import sys, inference.http.app, inference.service, inference.cli, inference.ui;"
        "inference.cli.build_parser();"
        "print([m for m in ('yaml', 'packaging', 'tools') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
