"""``python -m tools.bench_hotswap``: what a LoRA switch costs on a compiled denoiser, with and
without hot-swapping (issue 25), on the tiny pipeline.

For each mode, a fresh process (and an empty inductor cache, so that neither mode reuses the
other's kernels) starts a service whose UNet is compiled (``--backend``; inductor needs a C
compiler) and serves: the base (compiles), a first adapter, a switch to a second, a switch back,
a third never seen, and that one again (the steady cost: hot-swapped adapters run padded to
LORA_MAX_RANK). Prints per step the model time (``inference_ms``) and the graphs dynamo
compiled (``torch._dynamo.utils.counters``), side by side, with ratios plain / hot-swap.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

STEPS = (
    "compile (base)",
    "first adapter",
    "switch to a 2nd",
    "switch back",
    "a 3rd adapter",
    "the 3rd again (no switch)",
)


def measure(work: Path, hotswap: bool, backend: str) -> list[tuple[float, int]]:
    """(inference ms, graphs compiled by that call) per step of ``STEPS``."""
    import torch
    from torch._dynamo.utils import counters

    from inference.service import Service
    from inference.settings import Settings

    torch._dynamo.reset()
    settings = Settings(
        model=str(work / "pipe"),
        device="cpu",
        lora_dir=work / "loras",
        max_wait_ms=0,
        lora_max_rank=8,
        result_cache_mb=0,
    )
    service = Service.from_settings(settings).start()
    model = service.model
    model.pipe.unet.compile(backend=backend)
    model.lora.attach(model.pipe, model.name, compiled=hotswap)
    request = {"prompt": "a fox", "seed": 1, "steps": 2, "width": 64, "height": 64}
    rows = []
    try:
        for refs in ((), ("l0",), ("l1",), ("l0",), ("l2",), ("l2",)):
            before = counters["stats"]["unique_graphs"]
            loras = [{"ref": f"local:{ref}"} for ref in refs]
            ms = service.generate({**request, "loras": loras}).timings.inference_ms
            rows.append((ms, counters["stats"]["unique_graphs"] - before))
    finally:
        service.stop()
    return rows


def in_fresh_process(work: Path, mode: str, backend: str) -> list[tuple[float, int]]:
    """``measure`` in a new interpreter with its own, empty inductor cache."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(prefix="inductor-")}
    command = [sys.executable, "-m", "tools.bench_hotswap", "--backend", backend]
    command += ["--work", str(work), "--mode", mode]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return [(ms, graphs) for ms, graphs in json.loads(out.strip().splitlines()[-1])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)  # one mode, for main
    parser.add_argument("--mode", choices=("plain", "hotswap"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode is not None:
        print(json.dumps(measure(args.work, args.mode == "hotswap", args.backend)))
        return 0
    from tools.tiny import build_tiny_pipeline
    from tools.tiny_lora import build_tiny_lora

    work = Path(tempfile.mkdtemp(prefix="bench-hotswap-"))
    build_tiny_pipeline(work / "pipe")
    for i, rank in enumerate((4, 8, 2)):
        build_tiny_lora(work / "pipe", work / "loras" / f"l{i}", seed=i, rank=rank)
    plain = in_fresh_process(work, "plain", args.backend)
    swapped = in_fresh_process(work, "hotswap", args.backend)
    print(f"torch.compile backend {args.backend}, tiny pipeline, CPU, 2 steps (one run)\n")
    print("| step | plain ms | plain graphs | hot-swap ms | hot-swap graphs | plain / hot-swap |")
    print("|---|---:|---:|---:|---:|---:|")
    for step, (p_ms, p_g), (h_ms, h_g) in zip(STEPS, plain, swapped, strict=True):
        print(f"| {step} | {p_ms:.0f} | {p_g} | {h_ms:.0f} | {h_g} | {p_ms / h_ms:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
