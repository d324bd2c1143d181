"""``python -m tools.bench.accel --before DIR``: the code before a change, served beside ours in
the same run (on a shared machine only a side-by-side ratio means anything)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools.bench.accel import parse_args
from tools.bench.processes import ROOT


def test_before_adds_ours_before_and_refuses_what_is_not_a_checkout(tmp_path: Path) -> None:
    args = parse_args(["--quick", "--before", str(ROOT)])
    assert args.servers[0] == "ours-before" and "ours" in args.servers
    with pytest.raises(SystemExit):
        parse_args(["--before", str(tmp_path)])  # no inference/ there
    with pytest.raises(SystemExit):
        parse_args(["--servers", "ours,ours-before"])  # ours-before without --before


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk: scripts/install-system-deps.sh")
def test_the_checkout_before_is_the_code_that_serves_ours_before(tmp_path: Path) -> None:
    """A copy of this checkout whose engine tags every result: only ours-before's answers can
    carry the tag, so a run that served this checkout twice fails."""
    before = tmp_path / "before"
    shutil.copytree(ROOT / "inference", before / "inference")
    shutil.copytree(ROOT / "tools", before / "tools")
    encoding = before / "inference" / "engine" / "encoding.py"
    text = encoding.read_text()
    tagged = text.replace("        batch_size=output.batch_images,", "        batch_size=99,")
    assert tagged != text
    encoding.write_text(tagged)
    command = [
        sys.executable, "-m", "tools.bench.accel", "--quick", "--formats", "jpeg",
        "--servers", "ours", "--concurrency", "1", "--seconds", "0.5", "--warmup-s", "0.5",
        "--repeats", "1", "--cost", "a=0.01,b=0.002", "--before", str(before), "-q",
        "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    data = json.loads((tmp_path / "out" / "accel.json").read_text())
    batch = {x["server"]: x["mean_batch"] for x in data["levels"]}
    assert batch == {"ours-before": pytest.approx(99, rel=0.01), "ours": pytest.approx(1.0)}
    assert any("against ours-before" in line for line in data["verdicts"])


def test_loop_cpu_runs_the_code_of_each_checkout(tmp_path: Path) -> None:
    """``python -m tools.bench.loop``: a run measures the checkout it is given; a copy whose
    app cannot be built fails with that copy's own error."""
    from tools.bench.loop import one_run

    assert 0 < one_run(ROOT, "jpeg", 16, 8) < 100
    before = tmp_path / "before"
    shutil.copytree(ROOT / "inference", before / "inference")
    shutil.copytree(ROOT / "tools", before / "tools")
    app = before / "inference" / "http" / "app.py"
    app.write_text(app.read_text() + "\nraise ImportError('the copy before')\n")
    with pytest.raises(RuntimeError, match="the copy before"):
        one_run(before, "jpeg", 16, 8)
