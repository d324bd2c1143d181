"""``python -m tools.bench_switch``: what a model switch costs under MAX_LOADED_MODELS.

A version the fleet unloaded comes back through its backend's ``load()``. Without a host copy
that reads the weights from disk (and deserialises them); with one (``preload()``, which Modal's
memory snapshot also uses) it only places the tensors on the device: a ``.to(device)`` and the
pipeline's set-up. This times both on the same pipeline, alternating the two so both see the
same machine load, and prints the medians side by side with their ratio. The pipeline is the
tiny random one of ``tools.tiny`` (built in a temporary folder) unless ``--model`` names a
folder. The disk reads come from the OS page cache after the first round: the best case for
disk, so the ratio is a lower bound.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from inference.models.diffusers import DiffusersModel


def load_s(folder: Path, device: str, dtype: str, *, from_host: bool) -> float:
    """Seconds one ``load()`` takes, after a ``preload()`` (untimed) when ``from_host``."""
    model = DiffusersModel(str(folder), device=device, dtype=dtype)
    if from_host and not model.preload():
        raise SystemExit(f"the host copy needs a known dtype on {device}: pass --dtype")
    started = time.perf_counter()
    model.load()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a diffusers folder (default: tiny, built)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16")
    parser.add_argument("--rounds", type=int, default=7, help="loads of each kind (default 7)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.model
        if folder is None:
            from tools.tiny import build_tiny_pipeline

            folder = build_tiny_pipeline(Path(scratch) / "tiny")
        load_s(folder, args.device, args.dtype, from_host=False)  # imports and first read
        disk, host = [], []
        for _ in range(args.rounds):
            disk.append(load_s(folder, args.device, args.dtype, from_host=False))
            host.append(load_s(folder, args.device, args.dtype, from_host=True))
    disk_ms, host_ms = statistics.median(disk) * 1000, statistics.median(host) * 1000
    print(f"model switch on {args.device} ({args.dtype}), median of {args.rounds} loads each:")
    print(f"  from disk         {disk_ms:9.1f} ms")
    print(f"  from host memory  {host_ms:9.1f} ms")
    print(f"  ratio             {disk_ms / host_ms:9.1f} x")


if __name__ == "__main__":
    main()
