"""Batch jobs and the CLI choose models from a registry (issue 23): a job mixing models draws
each line on its own version and its manifest says which, and ``--model`` on the command line
picks a model or pins a version, refusing an unknown name in one line.

The example registry's two ``draft`` versions are the mock model with different weights, so
the same request and seed draw different pixels on each, and an image says which version drew it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from inference.fleet import Fleet
from inference.jobs import fleet_map, run_batch
from inference.service import Service
from inference.settings import Settings
from tests.servers import ROOT

EXAMPLE = ROOT / "examples" / "models.toml"
LINE = {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2, "seed": 7}


def _job(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def _manifest(out: Path) -> dict[int, dict[str, Any]]:
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    return {record["line"]: record for record in records}


def _alone(pin: str) -> bytes:
    """The image a lone service of version ``pin`` draws for LINE."""
    fleet = Fleet.from_settings(Settings(models_file=EXAMPLE))
    service = Service.from_settings(fleet.registry.version(fleet.registry.route(pin)).settings)
    service.start()
    try:
        return service.generate(LINE).images[0].data
    finally:
        service.stop()


@pytest.fixture
def fleet() -> Any:
    fleet = Fleet.from_settings(Settings(models_file=EXAMPLE))
    fleet.default.start()
    yield fleet
    fleet.stop()
    fleet.default.stop()


def test_a_job_mixing_models_writes_each_line_from_its_own_version(
    tmp_path: Path, fleet: Fleet
) -> None:
    lines = [
        {**LINE, "model": "draft@v1"},
        {**LINE, "model": "draft@v2"},
        {**LINE, "model": "final"},
        LINE,  # no model: the default model's default version (draft@v1, weight 90)
        {**LINE, "model": "draft@v3"},  # refused before anything runs
    ]
    out = tmp_path / "out"
    summary = run_batch(
        _job(tmp_path / "job.jsonl", lines),
        out,
        fleet_map(fleet),
        progress=False,
        check_model=fleet.registry.route,
    )
    assert (summary.done, summary.failed) == (4, 1)
    manifest = _manifest(out)
    served = {line: manifest[line]["version"] for line in (1, 2, 3)}
    assert served == {1: "draft@v1", 2: "draft@v2", 3: "final@v1"}
    assert manifest[4]["version"].startswith("draft@")
    assert manifest[2]["request"]["model"] == "draft@v2"  # as the line named it
    assert manifest[5]["status"] == "failed"
    assert manifest[5]["error"]["type"] == "unknown_model"
    assert "its versions are 'v1', 'v2'" in manifest[5]["error"]["message"]

    def image(line: int) -> bytes:
        return (out / manifest[line]["outputs"][0]).read_bytes()

    # Same request and seed: a different image per version, each the version's own.
    assert image(1) != image(2)
    assert image(1) == _alone("draft@v1")
    assert image(2) == _alone("draft@v2")
    # The model joins the key: the same prompt on two models is two files.
    assert len({manifest[line]["key"] for line in (1, 2, 3, 4)}) == 4


def test_a_rerun_keeps_the_version_each_line_was_served_by(tmp_path: Path, fleet: Fleet) -> None:
    source = _job(tmp_path / "job.jsonl", [{**LINE, "model": "draft@v2"}])
    out = tmp_path / "out"
    run_batch(source, out, fleet_map(fleet), progress=False)
    again = run_batch(source, out, fleet_map(fleet), progress=False)
    assert again.skipped == 1
    assert _manifest(out)[1]["version"] == "draft@v2"


def test_a_bad_model_value_is_that_lines_error(tmp_path: Path, fleet: Fleet) -> None:
    source = _job(tmp_path / "job.jsonl", [{**LINE, "model": 3}, LINE])
    summary = run_batch(source, tmp_path / "out", fleet_map(fleet), progress=False)
    assert (summary.done, summary.failed) == (1, 1)
    error = _manifest(tmp_path / "out")[1]["error"]
    assert error["field"] == "model" and "got 3" in error["message"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MODELS_FILE", None)
    return subprocess.run(
        [sys.executable, "-m", "inference", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_model_pins_a_registry_version(tmp_path: Path) -> None:
    common = ["--models-file", str(EXAMPLE), "--prompt", "a lighthouse", "--seed", "7", "-q"]
    sizes = ["--width", "64", "--height", "64", "--steps", "2"]
    first = _cli("predict", *common, *sizes, "--model", "draft@v2", "-o", "v2.png", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "version=draft@v2" in first.stdout
    assert (tmp_path / "v2.png").read_bytes() == _alone("draft@v2")
    # With a registry in the environment too, and the batch command's lines.
    _job(tmp_path / "job.jsonl", [LINE])
    batch = _cli(
        "batch", "job.jsonl", "--models-file", str(EXAMPLE), "--model", "draft@v2", "-q",
        cwd=tmp_path,
    )  # fmt: skip
    assert batch.returncode == 0, batch.stderr
    assert _manifest(tmp_path / "out")[1]["version"] == "draft@v2"


@pytest.mark.parametrize("command", ["predict", "batch"])
def test_cli_unknown_model_is_one_line_listing_the_names(tmp_path: Path, command: str) -> None:
    _job(tmp_path / "job.jsonl", [LINE])
    first = ["--prompt", "x"] if command == "predict" else ["job.jsonl"]
    proc = _cli(command, *first, "--models-file", str(EXAMPLE), "--model", "drafty", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: unknown model 'drafty' (did you mean 'draft'?); this server has 'draft', "
        "'final' (name@version pins a version)"
    ]
