"""``python -m tools.bench.phases``: time to the first image from process start, by phase.

The phases are those of a Modal container: interpreter and imports, weights from disk into CPU
memory (``preload``, before the memory snapshot), the move to the device and the rest of
``load`` (after restore), the first image (warm-up: lazy kernels, allocator) and its PNG.
Each run is a fresh interpreter; the first run only fills the page cache and is not counted, so
the numbers are for weights in the page cache, as on a warm host. What a memory snapshot saves
is roughly the first two phases; what it costs to restore one needs Modal's servers.

    python -m tools.bench.phases                       # the tiny pipeline, on CPU
    python -m tools.bench.phases --model DIR --device cuda --dtype bfloat16 --size 512
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.bench.processes import ROOT

PHASES = ("imports", "preload (disk -> CPU)", "load (CPU -> device)", "first image", "PNG")

#: Run in a fresh interpreter: prints the monotonic time at the end of each phase.
CHILD = """
import json, sys, time
import torch, diffusers, transformers  # what a snapshot's imports phase holds, as deploy does
from diffusers import AutoPipelineForText2Image, StableDiffusionPipeline
from inference.models.diffusers import DiffusersModel
from inference.schema import Job
from inference import codec
marks = [time.monotonic()]
source, device, dtype, size, steps = sys.argv[1:6]
model = DiffusersModel(source, device=device, dtype=dtype)
assert model.preload(), "preload declined: give --dtype explicitly"
marks.append(time.monotonic())
model.load()
marks.append(time.monotonic())
job = Job(prompt="a lighthouse", negative_prompt="", seeds=(1,), prompt_weight=7.5,
          steps=int(steps), width=int(size), height=int(size), output_format="png")
((pixels,),) = model.generate([job])
marks.append(time.monotonic())
codec.encode(pixels, "png")
marks.append(time.monotonic())
print(json.dumps(marks))
"""


def one_run(model: str, device: str, dtype: str, size: int, steps: int) -> list[float]:
    """Seconds spent in each phase by one fresh interpreter."""
    started = time.monotonic()  # CLOCK_MONOTONIC: the same clock in the child
    done = subprocess.run(
        [sys.executable, "-c", CHILD, model, device, dtype, str(size), str(steps)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the timed interpreter failed:\n{done.stderr[-2000:]}")
    marks = [started, *json.loads(done.stdout.strip().splitlines()[-1])]
    return [b - a for a, b in itertools.pairwise(marks)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.phases", description=__doc__)
    parser.add_argument("--model", help="a diffusers folder (default: build the tiny pipeline)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3, help="counted runs (after one uncounted)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from tools.tiny import build_tiny_pipeline

            model = str(build_tiny_pipeline(Path(tmp) / "tiny-sd"))
        spec = (model, args.device, args.dtype, args.size, args.steps)
        one_run(*spec)  # fills the page cache
        runs = [one_run(*spec) for _ in range(args.runs)]
    medians = [statistics.median(run[i] for run in runs) for i in range(len(PHASES))]
    rows = "".join(f"| {name} | {v:.2f} |\n" for name, v in zip(PHASES, medians, strict=True))
    sys.stdout.write(
        f"median of {args.runs} fresh interpreters, weights in the page cache\n"
        f"| phase | seconds |\n|---|---:|\n{rows}"
        f"| **process start to first PNG** | **{sum(medians):.2f}** |\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
