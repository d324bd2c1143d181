"""The stand-in accelerator benchmark: its model, its load generator, and a smoke run.

Numbers are never asserted (the machine is shared); the model's cost and images, the wiring
through ``MODEL=package.module:ClassName`` and a complete report are.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from inference.errors import ModelLoadError
from inference.models import build_model
from inference.service import Service
from inference.settings import Settings
from tests.servers import ROOT
from tools.bench import encoders
from tools.bench.images import photo_like
from tools.bench.standin import StandInModel, ideal_images_per_s, parse_cost
from tools.bench.wrk import group_cpu_s, steady_rate

MODEL = "tools.bench.standin:StandInModel"


def test_cost_parses_and_names_what_is_wrong() -> None:
    assert parse_cost("a=0.04, b=0.01") == (0.04, 0.01)
    for bad in ("a=0.04", "a=x,b=1", "a=1,b=-1", "a=1,b=1,c=2"):
        with pytest.raises(ValueError, match="STANDIN_COST"):
            parse_cost(bad)
    assert ideal_images_per_s(0.04, 0.01, 8) == pytest.approx(8 / 0.12)


def test_the_server_builds_a_class_named_by_its_module_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STANDIN_COST", "a=0.02,b=0.01")
    model = build_model(Settings(model=MODEL))
    assert isinstance(model, StandInModel) and (model.a, model.b) == (0.02, 0.01)
    with pytest.raises(ModelLoadError, match=r"tools\.bench\.standin:Nope"):
        build_model(Settings(model="tools.bench.standin:Nope"))


def test_a_call_costs_a_plus_b_per_image_and_returns_photo_like_images(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STANDIN_COST", "a=0.05,b=0.02")
    service = Service.from_settings(Settings(model=MODEL)).start()
    try:
        started = time.monotonic()
        result = service.generate({"prompt": "x", "seed": 6, "num_outputs": 3, "width": 64})
        assert time.monotonic() - started >= 0.05 + 3 * 0.02
        from inference import codec

        pixels = [codec.decode(image.data) for image in result.images]
        assert np.array_equal(pixels[0], photo_like(512, 2)[:512, :64])  # seeds 6, 7, 8
        assert not np.array_equal(pixels[0], pixels[1])
    finally:
        service.stop()


def test_group_cpu_counts_this_process_group() -> None:
    before = group_cpu_s(os.getpgid(0))
    sum(i * i for i in range(2_000_000))
    assert group_cpu_s(os.getpgid(0)) > before


def test_the_encoder_comparison_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert encoders.main(["--size", "32", "--rounds", "2"]) == 0
    table = capsys.readouterr().out
    assert "| fpng |" in table and "| pil-6 (Pillow default) |" in table


def test_the_lossy_settings_comparison_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert encoders.main(["--lossy", "--size", "32", "--rounds", "2"]) == 0
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| jpeg") or line.startswith("| webp")
    }
    assert len(rows) == 14 and "webp q90 method 4 (default)" in rows
    assert float(rows["jpeg q95"][3].strip(" |")) > float(rows["jpeg q50"][3].strip(" |"))
    assert encoders.psnr(photo_like(16), photo_like(16)) == float("inf")


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk: scripts/install-system-deps.sh")
def test_a_smoke_run_reports_every_server_and_format(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "tools.bench.accel", "--sizes", "512", "--formats", "png,jpeg",
        "--concurrency", "4", "--seconds", "1", "--warmup-s", "1", "--lead-s", "0",
        "--cost", "a=0.01,b=0.002",
        "-q", "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    data = json.loads((tmp_path / "accel.json").read_text())
    seen = {(x["server"], x["output_format"]) for x in data["levels"]}
    assert seen == {(s, f) for s in ("ours", "litserve", "naive") for f in ("png", "jpeg")}
    for level in data["levels"]:
        assert level["errors"] == 0 and level["images_per_s"] > 0, level
        assert level["server_cpu_ms_per_image"] > 0
    assert len(data["verdicts"]) == 4  # two formats: share of ideal, and against LitServe


def test_the_steady_rate_leaves_out_the_runs_ends_and_reads_through_batches() -> None:
    # 8 clients answered together every 0.12 s (66.7/s), after a slow start (the first call
    # waits 0.5 s for its clients), up to a cut-off end
    stamps = [0.5 + 0.12 * call + 0.0001 * i for call in range(60) for i in range(8)]
    assert steady_rate(stamps) == pytest.approx(8 / 0.12, rel=0.01)
    whole_run = len(stamps) / (stamps[-1] + 0.1)
    assert whole_run < 0.95 * 8 / 0.12  # what counting over the whole run says (0.94)
    assert steady_rate(stamps[:100]) is None  # no steady window in a 1.5 s run
    assert steady_rate([]) is None


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk: scripts/install-system-deps.sh")
def test_a_steady_run_measures_its_middle_and_keeps_the_whole_runs_rate(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "tools.bench.accel", "--sizes", "64", "--formats", "jpeg",
        "--servers", "ours", "--concurrency", "4", "--seconds", "1", "--warmup-s", "0.5",
        "--lead-s", "3", "--repeats", "1", "--cost", "a=0.01,b=0.002", "-q",
        "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (level,) = json.loads((tmp_path / "accel.json").read_text())["levels"]
    steady, whole = level["images_per_s"], level["whole_run_images_per_s"]
    assert steady > 0 and 0.7 < steady / whole < 1.3, level  # the same load, measured apart
    assert "whole run images/s" in (tmp_path / "accel.md").read_text()


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk: scripts/install-system-deps.sh")
def test_the_quick_run_compares_both_policies_litserve_and_two_devices(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "tools.bench.accel", "--quick", "--formats", "png",
        "--concurrency", "1,8", "--seconds", "0.5", "--warmup-s", "0.5", "--repeats", "2",
        "--lead-s", "0",
        "--cost", "a=0.01,b=0.002", "-q", "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    data = json.loads((tmp_path / "accel.json").read_text())
    seen = {(x["server"], x["concurrency"]) for x in data["levels"]}
    servers = ("ours-greedy", "ours", "litserve")
    assert seen == {(s, c) for s in servers for c in (1, 8)} | {("ours-2dev", 8)}
    assert all(len(x["images_per_s_runs"]) == 2 and x["errors"] == 0 for x in data["levels"])
    text = "\n".join(data["verdicts"])
    goals = (
        "x ideal, png 512x512 c=8",
        "p50 no worse than greedy",
        "above greedy's, png 512x512 c=1",
        "2 devices >= 1.9 x one",
        "ahead of LitServe, png 512x512 c=1",
    )
    assert all(goal in text for goal in goals), text


def test_the_gpu_report_renders_what_was_measured_before_a_stop() -> None:
    from tools.bench.gpu import render

    row = {
        "server": "eager", "concurrency": 8, "images_per_s": 9.5, "share_of_floor": 0.51,
        "p50_ms": 800.0, "p95_ms": 900.0, "mean_batch": 7.5, "gpu_util_pct": 97.0, "errors": 0,
    }  # fmt: skip
    text = render({"levels": [row], "ceiling": None, "notes": ["compile: skipped (budget)"]})
    assert "| eager | 8 | 9.50 | 0.51 |" in text and "compile: skipped" in text
    assert subprocess.run(["bash", "-n", str(ROOT / "tools" / "gpu_bench.sh")]).returncode == 0
