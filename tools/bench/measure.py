"""The measurements: load against a served model, the in-process ceiling, cold start, GPU FLOPs."""

from __future__ import annotations

import asyncio
import json
import math
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tools.bench.data import (
    PROMPT,
    Ceiling,
    ColdStart,
    LevelResult,
    Workload,
    mean_batch_size,
    percentile,
)
from tools.bench.processes import (
    PEERS_DIR,
    ROOT,
    fetch,
    free_port,
    server_env,
    start_server,
    stop_process_group,
)

#: Dense bf16 tensor-core peak in TFLOP/s by GPU name fragment (vendor datasheets, no sparsity).
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
    "RTX 4090": 165.0,
}


def drive_load(
    url: str, server: str, workload: Workload, concurrency: int, requests: int, env: dict[str, str]
) -> LevelResult:
    """Run the load driver process against ``url`` and summarise what it saw."""
    command = [
        sys.executable,
        str(PEERS_DIR / "load.py"),
        "--url",
        url + "/predict",
        "--requests",
        str(requests),
        "--concurrency",
        str(concurrency),
        "--payload",
        json.dumps(workload.payload()),
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"load driver failed ({done.returncode}):\n{done.stderr[-2000:]}")
    data = json.loads(done.stdout)
    latencies_ms = [s * 1000 for s in data["latencies_s"]]
    server_p50: dict[str, float] = {}
    if data["timings"]:
        for key in ("queue_ms", "inference_ms", "encode_ms", "total_ms"):
            server_p50[key] = statistics.median(t[key] for t in data["timings"])
    return LevelResult(
        server=server,
        workload=workload.name,
        concurrency=concurrency,
        requests=data["requests"],
        images=data["images"],
        errors=data["errors"],
        wall_s=data["wall_s"],
        images_per_s=data["images"] / data["wall_s"] if data["wall_s"] else math.nan,
        p50_ms=percentile(latencies_ms, 50),
        p95_ms=percentile(latencies_ms, 95),
        p99_ms=percentile(latencies_ms, 99),
        mean_batch=mean_batch_size(data["batch_sizes"]),
        error_samples=data["error_samples"],
        server_p50_ms=server_p50,
        overhead_p50_ms=statistics.median(data["overheads_ms"]) if data["overheads_ms"] else None,
        client_cpu_ms_per_request=data["client_cpu_s"] * 1000 / max(1, data["requests"]),
    )


def measure_ceiling_isolated(
    workload: Workload, max_batch_size: int, requests: int, repeats: int = 3
) -> Ceiling:
    """``measure_ceiling`` in a fresh interpreter, where no other thread has used torch yet
    (this process built the tiny pipeline: its torch thread pool would slow the engine's)."""
    args = json.dumps([asdict(workload), max_batch_size, requests, repeats])
    code = (
        "import json, sys; from dataclasses import asdict;"
        "from tools.bench.data import Workload;"
        "from tools.bench.measure import measure_ceiling;"
        "w, b, n, r = json.loads(sys.argv[1]); w['env'] = tuple(map(tuple, w['env']));"
        "print(json.dumps(asdict(measure_ceiling(Workload(**w), b, n, r))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, args], cwd=ROOT, capture_output=True, text=True, timeout=3600
    )
    if done.returncode != 0:
        raise RuntimeError(f"ceiling run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    data["images_per_s_by_batch"] = {int(k): v for k, v in data["images_per_s_by_batch"].items()}
    return Ceiling(**data)


def measure_ceiling(
    workload: Workload, max_batch_size: int, requests: int, repeats: int = 3
) -> Ceiling:
    """The engine in-process, no HTTP: all requests queued at once at each batch size up to the
    served ``max_batch_size``; the best is the ceiling the served numbers are compared with.

    Runs after every server has stopped, so it has the machine to itself (in a fresh
    interpreter, through ``measure_ceiling_isolated``).
    """
    from inference.schema import GenerateRequest
    from inference.service import Service
    from inference.settings import Settings

    fields = {"model": workload.model, "max_batch_size": max_batch_size}
    fields.update({k.lower(): v for k, v in workload.env})
    # One seeded request, repeated: measured with the result cache off, as the servers are.
    settings = Settings(max_queue_size=requests + 64, result_cache_mb=0, **fields)
    service = Service.from_settings(settings).start()
    batcher = service.engine.batcher
    request = GenerateRequest(**workload.payload())
    try:
        batcher.max_batch_size = 1
        # The model call as the engine's worker thread times it (torch's thread pool is per
        # thread: a call from this thread would measure another, slower, set-up).
        calls = [
            service.generate(request).timings.inference_ms
            for _ in range(max(5, min(30, requests // 4)))
        ]

        async def burst(n: int) -> float:
            started = time.perf_counter()
            await asyncio.gather(*(service.submit(request) for _ in range(n)))
            return time.perf_counter() - started

        by_batch: dict[int, float] = {}
        sizes = {2**i for i in range(max_batch_size.bit_length()) if 2**i <= max_batch_size}
        for batch in sorted(sizes | {max_batch_size}):
            batcher.max_batch_size = batch  # the worker reads it for every batch it forms
            asyncio.run(burst(batch))  # warm this batch shape
            # Best of ``repeats``: a ceiling is what the engine can do, so the least disturbed
            # run counts (a burst of other work on the machine only ever slows a run down).
            by_batch[batch] = max(requests / asyncio.run(burst(requests)) for _ in range(repeats))
    finally:
        service.stop()
    best = max(by_batch, key=lambda b: by_batch[b])
    return Ceiling(workload.name, by_batch, best, by_batch[best], statistics.median(calls))


IMPORTS_DONE = "bench: imports done at monotonic"
#: ``python -m inference serve --port PORT`` after timing the imports the server does before it
#: loads weights, torch included (the mock imports it to build; diffusers only on load).
TIMED_LAUNCH = f"""
import runpy, sys, time
import torch, uvicorn, inference.http.app, inference.cli
print("{IMPORTS_DONE}", time.monotonic(), flush=True)
sys.argv = ["inference", "serve", "--port", sys.argv[1]]
runpy.run_module("inference", run_name="__main__", alter_sys=True)
"""


def measure_cold_start(
    label: str,
    model: str,
    payload: dict[str, Any],
    log_dir: Path,
    extra_env: dict[str, str],
) -> ColdStart:
    """Process start -> first 200 from /predict, split into phases of that one process.

    The server runs under a launcher that does the server's imports first and prints the
    monotonic time they ended (CLOCK_MONOTONIC: the same clock here); load and warm-up come from
    the same server's /metrics. So the phases are one process's and add up: what remains is
    uvicorn's start and the first request, never negative. The page cache is warm.
    """
    import httpx

    workload = Workload(label, model, payload["width"], payload["height"], payload["steps"])
    env = server_env(workload, extra_env)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = log_dir / f"cold-{label.replace(' ', '-')}.log"
    log_dir.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        started = time.monotonic()
        process = start_server([sys.executable, "-c", TIMED_LAUNCH, str(port)], env, log)
        try:
            total = None
            while time.monotonic() - started < 600:
                if process.poll() is not None:
                    return ColdStart(
                        label, None, None, None, None, None,
                        f"server exited with {process.returncode}: "
                        + log_path.read_text()[-300:].replace("\n", " "),
                    )  # fmt: skip
                try:
                    if fetch("POST", url + "/predict", payload, timeout=60).status_code == 200:
                        total = time.monotonic() - started
                        break
                except httpx.TransportError:  # not listening yet
                    pass
                time.sleep(0.01)
            if total is None:
                return ColdStart(label, None, None, None, None, None, "no 200 within 600 s")
            metrics = fetch("GET", url + "/metrics").text
        finally:
            stop_process_group(process)
    load_s = _metric(metrics, "inference_model_load_seconds")
    warmup_s = _metric(metrics, "inference_model_warmup_seconds")
    marks = re.findall(rf"^{IMPORTS_DONE} ([0-9.]+)$", log_path.read_text(), re.MULTILINE)
    import_s = float(marks[-1]) - started if marks else None
    rest = total - sum(v for v in (import_s, load_s, warmup_s) if v is not None)
    return ColdStart(label, total, import_s, load_s, warmup_s, rest)


def _metric(text: str, name: str) -> float | None:
    match = re.search(rf"^{name} ([0-9.eE+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def build_tiny_model(folder: Path) -> tuple[str | None, str]:
    """A tiny random diffusers pipeline on disk, or (None, why not)."""
    try:
        from tools import tiny
    except ImportError as exc:
        return None, f"tools.tiny is not available ({exc})"
    try:
        import inference.models.diffusers  # noqa: F401
    except ImportError as exc:
        return None, f"the diffusers backend is not available ({exc})"
    return str(tiny.build_tiny_pipeline(folder / "tiny-sd")), ""


def gpu_compute_bound(folder: Path, steps: int, images_per_s: float | None) -> dict[str, Any]:
    """FLOPs per 512x512 image of the SD 1.5 pipeline (torch.utils.flop_counter) and the
    fraction of the GPU's dense bf16 peak that ``images_per_s`` reaches."""
    import torch
    from diffusers import StableDiffusionPipeline
    from torch.utils.flop_counter import FlopCounterMode

    pipe = StableDiffusionPipeline.from_pretrained(str(folder), torch_dtype=torch.bfloat16)
    pipe = pipe.to("cuda")
    pipe.set_progress_bar_config(disable=True)
    with FlopCounterMode(display=False) as counter:
        pipe(PROMPT, num_inference_steps=steps, height=512, width=512, output_type="np")
    flops = counter.get_total_flops()
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    out: dict[str, Any] = {"device": name, "flops_per_image": flops, "peak_tflops": peak}
    if peak and images_per_s:
        out["fraction_of_peak"] = images_per_s * flops / (peak * 1e12)
    return out
