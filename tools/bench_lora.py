"""``python -m tools.bench_lora``: what LoRA adapters cost on the tiny pipeline (or any model).

Measures, through the service (``inference_ms``: the model call, adapter switching included):
a request without adapters (the base), the first use of an adapter (its load), a cached switch
between two loaded adapters, and a request with an adapter that is already active (its
per-image overhead). Prints a Markdown table of medians and of ratios to the base, for
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any


def measure(repeats: int, steps: int, rank: int, device: str) -> list[tuple[str, float, float]]:
    """(what, median ms, median ratio to the same round's base call) per measurement."""
    from inference.service import Service
    from inference.settings import Settings
    from tools.tiny import build_tiny_pipeline
    from tools.tiny_lora import build_tiny_lora

    work = Path(tempfile.mkdtemp(prefix="bench-lora-"))
    pipeline = build_tiny_pipeline(work / "pipe")
    names = [f"l{i}" for i in range(repeats + 2)]  # two to switch between, one new per round
    for i, name in enumerate(names):
        build_tiny_lora(pipeline, work / "loras" / name, seed=i, rank=rank)
    settings = Settings(
        model=str(pipeline),
        device=device,
        lora_dir=work / "loras",
        max_wait_ms=0,
        lora_cache_max_count=len(names),
        result_cache_mb=0,  # the same seeded request repeats: measure the model, not the cache
    )
    service = Service.from_settings(settings).start()
    request: dict[str, Any] = {"prompt": "a fox", "seed": 1, "steps": steps, "width": 64}
    request["height"] = 64

    def call(*refs: str) -> float:
        loras = [{"ref": f"local:{ref}"} for ref in refs]
        return service.generate({**request, "loras": loras}).timings.inference_ms

    # Interleaved rounds, each against its own base call, so that drift in the machine's load
    # cancels out of the ratios.
    rounds: list[dict[str, float]] = []
    try:
        call(), call(names[0]), call(names[1])  # warm-up; the first two adapters now cached
        for i in range(repeats):
            base = call()
            call(names[0])
            active = call(names[0])
            switch = call(names[1])
            first = call(names[2 + i])
            rounds.append({"base": base, "first": first, "switch": switch, "active": active})
    finally:
        service.stop()
    return [
        (
            what,
            statistics.median(r[key] for r in rounds),
            statistics.median(r[key] / r["base"] for r in rounds),
        )
        for what, key in (
            ("no adapter (base)", "base"),
            ("first use of an adapter (load + image)", "first"),
            ("cached switch to another adapter (+ image)", "switch"),
            ("same adapter again (active, + image)", "active"),
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_lora", description=__doc__)
    parser.add_argument("--repeats", type=int, default=15, help="requests per measurement")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps per image")
    parser.add_argument("--rank", type=int, default=4, help="LoRA rank of the tiny adapters")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rows = measure(args.repeats, args.steps, args.rank, args.device)
    lines = ["| what | median model call (ms) | median ratio to base |", "| --- | ---: | ---: |"]
    lines += [f"| {what} | {ms:.1f} | {ratio:.2f} |" for what, ms, ratio in rows]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
