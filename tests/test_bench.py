"""The benchmark harness: a quick run produces a complete report; the pieces compute right.

The quick run starts every real server (ours, ours with MAX_WAIT_MS=0, the naive FastAPI peer,
the LitServe peer) as a subprocess and drives each from the real load-driver process. Numbers
are never asserted, only that every server and every column is filled.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from inference import cli
from tests.servers import ROOT
from tools.bench import command
from tools.bench.data import Ceiling, LevelResult, Report, mean_batch_size, percentile
from tools.bench.processes import ALL_SERVERS, stop_process_group
from tools.bench.report import (
    DEFAULT_NOISE_BAND,
    ahead_verdict,
    goal_verdicts,
    median_run,
    noise_band,
)

MD_COLUMNS = 11  # server .. client CPU in the throughput table


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    command = [sys.executable, "-m", "tools.bench", "--quick", "-q", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_quick_run_reports_every_server_and_level(quick_report: Path) -> None:
    data = json.loads((quick_report / "bench.json").read_text())
    seen = {(r["server"], r["concurrency"]) for r in data["levels"]}
    assert seen == {(s, c) for s in ALL_SERVERS for c in (1, 4)}
    for level in data["levels"]:
        assert level["errors"] == 0, level["error_samples"]
        assert level["images"] == level["requests"] == 12
        for key in ("images_per_s", "p50_ms", "p95_ms", "p99_ms", "mean_batch"):
            assert math.isfinite(level[key]) and level[key] > 0, (level["server"], key)
        assert level["p50_ms"] <= level["p95_ms"] <= level["p99_ms"]
    for level in data["levels"]:
        if level["server"] == "naive":
            assert level["mean_batch"] == 1.0  # one model call per request, by construction
        if level["server"].startswith("ours"):
            assert set(level["server_p50_ms"]) == {
                "queue_ms",
                "inference_ms",
                "encode_ms",
                "total_ms",
            }
    for cold in data["cold_starts"]:  # phases of one process: they add up to the total
        if cold["total_s"] is not None:
            assert cold["import_s"] > 0 and cold["rest_s"] >= 0, cold
    (ceiling,) = data["ceilings"]
    assert ceiling["images_per_s"] > 0 and ceiling["model_call_p50_ms"] > 0
    assert set(ceiling["images_per_s_by_batch"]) == {"1", "2", "4", "8"}


def test_quick_run_markdown_has_every_cell_filled(quick_report: Path) -> None:
    markdown = (quick_report / "bench.md").read_text()
    rows = [
        line
        for line in markdown.splitlines()
        if line.startswith("| ") and "mock 64x64" in line and line.split("|")[1].strip() in
        ALL_SERVERS
    ]  # fmt: skip
    assert len(rows) == len(ALL_SERVERS) * 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == MD_COLUMNS
        assert all(cells) and "n/a" not in cells, row
    mock_cold = next(line for line in markdown.splitlines() if line.startswith("| mock |"))
    assert "n/a" not in mock_cold, mock_cold
    assert "## Goals" in markdown and "serving overhead" in markdown
    png = (quick_report / "bench.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_percentile_matches_the_numpy_definition() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 5.0
    assert percentile(values, 95) == pytest.approx(4.8)
    assert math.isnan(percentile([], 50))


def test_mean_batch_size_weights_each_call_once() -> None:
    # One call of 4 (reported by its 4 requests) and two calls of 1: 6 images in 3 calls.
    assert mean_batch_size([4, 4, 4, 4, 1, 1]) == pytest.approx(2.0)
    assert math.isnan(mean_batch_size([]))


def test_goal_verdicts_name_the_numbers() -> None:
    def level(server: str, c: int, ips: float, p95: float, p50: float = 10.0) -> LevelResult:
        result = LevelResult(server, "mock 64x64", c, 10, 10, 0, 1.0, ips, p50, p95, p95, 1.0)
        result.overhead_p50_ms = p50 - 2.0  # what the load driver derives per request
        return result

    report = Report("cmd", {}, {})
    report.ceilings.append(Ceiling("mock 64x64", {1: 100.0}, 1, 100.0, 2.0))
    report.levels += [
        level("ours", 1, 50, 5, p50=6.0),
        level("ours", 32, 95, 20),
        level("naive", 32, 50, 30),
        level("litserve", 32, 96, 10),
    ]
    verdicts = goal_verdicts(report)
    assert any(v.startswith("MET: served >= 0.9 x ceiling") and "0.95 x" in v for v in verdicts)
    assert any(v.startswith("MET: ahead of naive") for v in verdicts)
    assert any(
        v.startswith("WITHIN NOISE (no claim): ahead of litserve") and "95.0 vs 96.0" in v
        for v in verdicts
    )
    assert any(v.startswith("MET: serving overhead") and "4.00 ms" in v for v in verdicts)


def test_ahead_is_claimed_only_beyond_the_measured_spread() -> None:
    def level(server: str, runs: list[float]) -> LevelResult:
        result = LevelResult(server, "w", 8, 10, 10, 0, 1.0, 0.0, 1.0, 10.0, 10.0, 1.0)
        return median_run([replace(result, images_per_s=r) for r in runs])

    peer = level("litserve", [98.0, 100.0, 99.0])
    close, far = level("ours", [100.0, 104.0, 102.0]), level("ours", [120.0, 121.0, 119.0])
    assert (close.images_per_s, close.images_per_s_runs) == (102.0, [100.0, 104.0, 102.0])
    band = noise_band(close, peer)
    assert band[0] == pytest.approx(4 / 102) and "3/3 repeats" in band[1]
    assert ahead_verdict("x", close.images_per_s, 99.0, band).startswith("WITHIN NOISE")
    assert ahead_verdict("x", far.images_per_s, 99.0, noise_band(far, peer)).startswith("MET")
    assert ahead_verdict("x", 80.0, 99.0, band).startswith("MISSED")
    assert noise_band(replace(close, images_per_s_runs=[]), peer)[0] == DEFAULT_NOISE_BAND


def test_bench_is_a_tools_command_with_checked_flags(capsys: pytest.CaptureFixture[str]) -> None:
    parser = command.build_parser()
    args = parser.parse_args(["--quick", "--servers", "ours,naive"])
    assert args.quick and args.servers == ["ours", "naive"]
    with pytest.raises(SystemExit):
        parser.parse_args(["--servers", "ours,torchserve"])
    assert "torchserve" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--concurrency", "1,0"])
    assert "must be >= 1" in capsys.readouterr().err
    # The shipped CLI no longer carries the harness.
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["bench"])
    assert "invalid choice: 'bench'" in capsys.readouterr().err


def test_importing_the_cli_does_not_import_the_peers() -> None:
    code = (
        "import sys, inference.cli, tools.bench.command;"
        "heavy = [m for m in ('litserve', 'matplotlib', 'torch') if m in sys.modules];"
        "print(heavy)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_stopping_a_server_stops_its_children() -> None:
    # LitServe's workers outlive a SIGTERM to their parent; the whole group must go.
    code = (
        "import subprocess, sys, time;"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']);"
        "time.sleep(120)"
    )
    process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        time.sleep(1.0)  # let it start its child
        stop_process_group(process)
        with pytest.raises(ProcessLookupError):
            os.killpg(process.pid, 0)
    finally:
        if process.poll() is None:
            process.kill()
