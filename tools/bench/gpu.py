"""``python -m tools.bench.gpu``: SD 1.5's architecture on a real GPU, served and in-process.

Unattended, in about 10 minutes on one H100/H200-class GPU (every step has a time cap and is
skipped, with a note, when the remaining budget cannot hold it): builds the pipeline from its
published configs with random weights (``tools.tiny.build_sd15_pipeline``, no download; the
compute is the real model's), then for each configuration (eager; channels-last; torch.compile
with channels-last) serves it through ``python -m inference serve`` at 512x512, 25 steps with
guidance, bfloat16, at concurrency 1, 8 and 32, while ``nvidia-smi`` samples GPU utilisation.
The eager pipeline is first measured in-process (the engine, no HTTP) as the ceiling. Each
throughput is reported as a share of the compute floor (``--floor-ms``: about 1.6 TFLOP per
step, 25 steps, ~54 ms per image at an H200's ~790 TFLOP/s of dense bf16 actually reachable).

Writes ``<out>/gpu.md`` and ``<out>/gpu.json``. ``tools/gpu_bench.sh`` runs this, then
``tests/test_gpu.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tools.bench.data import Workload
from tools.bench.measure import drive_load, measure_ceiling_isolated
from tools.bench.processes import free_port, server_command, server_env, server_process

CONFIGS = {
    "eager": (),
    "channels-last": (("CHANNELS_LAST", "1"),),
    "compile+channels-last": (("CHANNELS_LAST", "1"), ("TORCH_COMPILE", "1")),
}


class GpuSampler:
    """``nvidia-smi`` every 200 ms in the background; the mean utilisation of a window."""

    def __init__(self) -> None:
        query = "--query-gpu=utilization.gpu,memory.used"
        self.samples: list[tuple[float, float, float]] = []
        self.process: subprocess.Popen[str] | None = None
        if shutil.which("nvidia-smi") is None:  # the CPU dry run: no samples
            return
        self.process = subprocess.Popen(
            ["nvidia-smi", query, "--format=csv,noheader,nounits", "-lms", "200"],
            stdout=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            try:
                util, memory = (float(v) for v in line.split(",")[:2])
            except ValueError:  # "[N/A]" on some GPUs
                continue
            self.samples.append((time.monotonic(), util, memory))

    def mean(self, start: float, end: float) -> dict[str, float]:
        window = [s for s in self.samples if start <= s[0] <= end]
        if not window:
            return {}
        return {
            "gpu_util_pct": statistics.mean(s[1] for s in window),
            "gpu_mem_mib_max": max(s[2] for s in window),
        }

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.gpu", description=__doc__)
    parser.add_argument("--budget-s", type=float, default=540, help="stop starting new steps")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--floor-ms", type=float, default=54.0, help="compute floor per image")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument(
        "--dry-run-cpu",
        action="store_true",
        help="the tiny pipeline at 64x64 on CPU in float32: checks the wiring without a GPU",
    )
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.budget_s
    levels = [int(c) for c in args.concurrency.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"levels": [], "ceiling": None, "notes": []}
    sampler = GpuSampler()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run(args, Path(tmp), levels, deadline, sampler, report)
    finally:  # a timeout or a failure still leaves what was measured
        sampler.stop()
        save(report, args.out)
    sys.stdout.write(render(report))
    return 0


def save(report: dict[str, Any], out: Path) -> None:
    (out / "gpu.json").write_text(json.dumps(report, indent=2))
    (out / "gpu.md").write_text(render(report))


def run(
    args: argparse.Namespace,
    tmp: Path,
    levels: list[int],
    deadline: float,
    sampler: GpuSampler,
    report: dict[str, Any],
) -> None:
    """Build, then the in-process ceiling (eager), then each served configuration."""
    from tools.tiny import build_sd15_pipeline, build_tiny_pipeline

    started = time.monotonic()
    if args.dry_run_cpu:
        folder, side = str(build_tiny_pipeline(tmp / "tiny")), 64
        base: tuple[tuple[str, str], ...] = (("DEVICE", "cpu"), ("DTYPE", "float32"))
    else:
        folder, side = str(build_sd15_pipeline(tmp / "sd15")), 512
        base = (("DEVICE", "cuda"), ("DTYPE", "bfloat16"))
    report["build_s"] = time.monotonic() - started
    eager = Workload("SD1.5 eager", folder, side, side, args.steps, base)
    ceiling = measure_ceiling_isolated(eager, args.max_batch_size, 16, repeats=1)
    report["ceiling"] = asdict(ceiling) | {
        "share_of_floor": ceiling.images_per_s * args.floor_ms / 1000
    }
    save(report, args.out)
    for name in args.configs.split(","):
        workload = Workload(f"SD1.5 {name}", folder, side, side, args.steps, base + CONFIGS[name])
        need = 200 if "compile" in name else 60  # a compile warm-up takes minutes
        if time.monotonic() + need > deadline:
            report["notes"].append(f"{name}: skipped, under {need} s of budget left")
            continue
        port = free_port()
        cmd, extra, ready = server_command("ours", port, args.max_batch_size, 10.0)
        env = server_env(workload, extra)
        with server_process(name, cmd, env, port, ready, args.out / "logs") as (url, _):
            for concurrency in levels:
                if time.monotonic() + 45 > deadline:
                    report["notes"].append(f"{name} c={concurrency}: skipped (budget)")
                    continue
                window = time.monotonic()
                result = drive_load(url, name, workload, concurrency, max(2 * concurrency, 8), env)
                row = asdict(result) | sampler.mean(window, time.monotonic())
                row["share_of_floor"] = result.images_per_s * args.floor_ms / 1000
                report["levels"].append(row)
                save(report, args.out)
                print(json.dumps(row), flush=True)


def render(report: dict[str, Any]) -> str:
    lines = [
        "| config | concurrency | images/s | share of floor | p50 ms | p95 ms | mean batch | "
        "GPU util % | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["levels"]:
        lines.append(
            f"| {row['server']} | {row['concurrency']} | {row['images_per_s']:.2f} | "
            f"{row['share_of_floor']:.2f} | {row['p50_ms']:,.0f} | {row['p95_ms']:,.0f} | "
            f"{row['mean_batch']:.2f} | {row.get('gpu_util_pct', float('nan')):.0f} | "
            f"{row['errors']} |"
        )
    if ceiling := report["ceiling"]:
        lines.append(
            f"\nIn-process ceiling (eager): {ceiling['images_per_s']:.2f} images/s at batch "
            f"{ceiling['best_batch']} ({ceiling['share_of_floor']:.2f} of the floor); by batch: "
            f"{ceiling['images_per_s_by_batch']}"
        )
    lines += [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
