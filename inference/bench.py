"""``python -m inference bench``: throughput, latency and cold start, side by side with peers.

Every server under test runs as its own subprocess on 127.0.0.1, and load comes from yet another
process (``benchmarks/load.py``), so neither the client's event loop nor its JSON decoding steals
time from the server's. For each server, workload and concurrency level the harness records
images/s, latency p50/p95/p99, the mean batch size (from the ``batch_size`` each response reports)
and errors. Peers, on the same model and workload in the same run:

- ``ceiling``: the engine called in-process at its best batch size (no HTTP);
- ``naive``: FastAPI calling the model once per request (``benchmarks/naive_server.py``);
- ``litserve``: LitServe with batching on, the same batch size and wait
  (``benchmarks/litserve_server.py``).

Cold start (process start to the first successful /predict) is split into interpreter + imports,
model load, warm-up (both from /metrics) and the rest (server start-up and the first request).
Results go to ``results/``: ``bench.md`` (tables + goal verdicts), ``bench.json`` and ``bench.png``.

The peers and the load driver live in ``benchmarks/`` next to the package, so the command runs
from a source checkout. Nothing heavy is imported here at module level: ``--help`` stays fast and
importing ``inference.cli`` never pulls in litserve, matplotlib or torch.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
ALL_SERVERS = ("ours", "ours-wait0", "naive", "litserve")
#: mock64/mock256: the mock model (cost linear in images: batching gains little on a CPU);
#: tiny-sd: a tiny random SD pipeline whose per-call overhead batching amortises, as on a GPU.
ALL_WORKLOADS = ("mock64", "mock256", "tiny-sd")
TINY_SD_STEPS = 10
PROMPT = "a lighthouse on a cliff at dusk, oil painting"

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


# -- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One kind of request, sent unchanged by every client to every server."""

    name: str
    model: str  # the MODEL env var of every server
    width: int
    height: int
    steps: int
    env: tuple[tuple[str, str], ...] = ()  # extra env vars for every server (DEVICE, DTYPE)
    requests: int | None = None  # per level, when it differs from --requests (GPU: slow images)

    def payload(self) -> dict[str, Any]:
        return {
            "prompt": PROMPT,
            "seed": 1234,
            "width": self.width,
            "height": self.height,
            "steps": self.steps,
            "output_format": "png",
        }


@dataclass
class LevelResult:
    """One server at one concurrency level on one workload."""

    server: str
    workload: str
    concurrency: int
    requests: int
    images: int
    errors: int
    wall_s: float
    images_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_batch: float
    error_samples: list[str] = field(default_factory=list)
    server_p50_ms: dict[str, float] = field(default_factory=dict)  # ours: queue/encode/total


@dataclass
class Ceiling:
    """The engine in-process: images/s at each batch size and the model-only call time."""

    workload: str
    images_per_s_by_batch: dict[int, float]
    best_batch: int
    images_per_s: float
    model_call_p50_ms: float  # one image, model.generate only: the floor of any latency


@dataclass
class ColdStart:
    label: str
    total_s: float | None
    import_s: float | None
    load_s: float | None
    warmup_s: float | None
    rest_s: float | None
    note: str = ""


@dataclass
class Report:
    command: str
    machine: dict[str, Any]
    config: dict[str, Any]
    levels: list[LevelResult] = field(default_factory=list)
    ceilings: list[Ceiling] = field(default_factory=list)
    cold_starts: list[ColdStart] = field(default_factory=list)
    gpu: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


# -- small helpers ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), the same definition as numpy's default."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def mean_batch_size(batch_sizes: Sequence[int]) -> float:
    """Images per model call, from the batch size each request reported.

    A batch of b images is reported by its b requests, so per-call mean = requests / sum(1/b).
    """
    if not batch_sizes:
        return math.nan
    return len(batch_sizes) / sum(1.0 / b for b in batch_sizes)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_start": round(os.getloadavg()[0], 2),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def _server_env(workload: Workload, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in _SETTING_NAMES}
    pythonpath = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return {
        **env,
        "PYTHONPATH": pythonpath,
        "PYTHONUNBUFFERED": "1",
        "MODEL": workload.model,
        "LOG_LEVEL": "warning",
        **dict(workload.env),
        **extra,
    }


def _setting_names() -> frozenset[str]:
    from inference.settings import Settings

    return frozenset(name.upper() for name in Settings.model_fields)


_SETTING_NAMES: frozenset[str] = frozenset()


def _http(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 5.0) -> Any:
    import httpx

    return httpx.request(method, url, json=body, timeout=timeout)


@contextmanager
def server_process(
    name: str, command: list[str], env: dict[str, str], port: int, ready_path: str, log_dir: Path
) -> Iterator[str]:
    """Run a server subprocess until ``ready_path`` answers 200; its output goes to a log file."""
    import httpx

    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: see stop_process_group
        )
        try:
            deadline = time.monotonic() + 300
            while True:
                if process.poll() is not None:
                    tail = log_path.read_text()[-2000:]
                    raise RuntimeError(
                        f"server {name!r} exited with {process.returncode} before it was ready; "
                        f"its log ({log_path}) ends with:\n{tail}"
                    )
                try:
                    if _http("GET", url + ready_path, timeout=2).status_code == 200:
                        break
                except httpx.TransportError:  # not listening yet
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"server {name!r} was not ready within 300 s; see {log_path}"
                    )
                time.sleep(0.1)
            yield url
        finally:
            stop_process_group(process)


def stop_process_group(process: subprocess.Popen[Any]) -> None:
    """SIGTERM the server's whole process group, SIGKILL what is left after 20 s.

    LitServe runs its API server and inference workers as child processes that outlive a
    SIGTERM to the parent; left running they would eat the CPU of every later measurement.
    """
    for sig, wait_s in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            process.poll()
            try:
                os.killpg(process.pid, 0)  # does anyone in the group remain?
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            continue
        break
    process.wait()


def server_command(
    name: str, port: int, max_batch_size: int, max_wait_ms: float
) -> tuple[list[str], dict[str, str], str]:
    """(command, extra env, readiness path) of each server under test."""
    py = sys.executable
    batching = {"MAX_BATCH_SIZE": str(max_batch_size), "MAX_QUEUE_SIZE": "4096"}
    if name == "ours":
        cmd = [py, "-m", "inference", "serve", "--port", str(port)]
        return cmd, {**batching, "MAX_WAIT_MS": f"{max_wait_ms:g}"}, "/ready"
    if name == "ours-wait0":
        cmd = [py, "-m", "inference", "serve", "--port", str(port)]
        return cmd, {**batching, "MAX_WAIT_MS": "0"}, "/ready"
    if name == "naive":
        return [py, str(BENCH_DIR / "naive_server.py"), "--port", str(port)], {}, "/health"
    if name == "litserve":
        cmd = [
            py,
            str(BENCH_DIR / "litserve_server.py"),
            "--port",
            str(port),
            "--max-batch-size",
            str(max_batch_size),
            "--batch-timeout-ms",
            f"{max_wait_ms:g}",
        ]
        return cmd, {}, "/health"
    raise ValueError(f"unknown server {name!r}; choose from {', '.join(ALL_SERVERS)}")


# -- measuring -------------------------------------------------------------------------------


def drive_load(
    url: str, server: str, workload: Workload, concurrency: int, requests: int, env: dict[str, str]
) -> LevelResult:
    """Run the load driver process against ``url`` and summarise what it saw."""
    command = [
        sys.executable,
        str(BENCH_DIR / "load.py"),
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
    )


def measure_ceiling(
    workload: Workload, max_batch_size: int, requests: int, repeats: int = 3
) -> Ceiling:
    """The engine in-process, no HTTP: all requests queued at once at each batch size up to the
    served ``max_batch_size``; the best is the ceiling the served numbers are compared with.

    Runs in this process after every server has stopped, so it has the machine to itself.
    """
    from inference.engine import Engine
    from inference.models import build_model
    from inference.schema import GenerateRequest
    from inference.settings import Settings

    fields = {"model": workload.model, "max_batch_size": max_batch_size}
    fields.update({k.lower(): v for k, v in workload.env})
    settings = Settings(max_queue_size=requests + 64, **fields)
    engine = Engine(build_model(settings), settings).start()
    request = GenerateRequest(**workload.payload())
    try:
        job = engine.resolve(request)
        calls = []
        for _ in range(max(5, min(30, requests // 4))):
            started = time.perf_counter()
            engine.model.generate([job])
            calls.append((time.perf_counter() - started) * 1000)

        async def burst(n: int) -> float:
            started = time.perf_counter()
            await asyncio.gather(*(engine.submit(request) for _ in range(n)))
            return time.perf_counter() - started

        by_batch: dict[int, float] = {}
        sizes = {2**i for i in range(max_batch_size.bit_length()) if 2**i <= max_batch_size}
        for batch in sorted(sizes | {max_batch_size}):
            engine.max_batch_size = batch  # the worker reads it for every batch it forms
            asyncio.run(burst(batch))  # warm this batch shape
            # Best of ``repeats``: a ceiling is what the engine can do, so the least disturbed
            # run counts (a burst of other work on the machine only ever slows a run down).
            by_batch[batch] = max(requests / asyncio.run(burst(requests)) for _ in range(repeats))
    finally:
        engine.stop()
    best = max(by_batch, key=lambda b: by_batch[b])
    return Ceiling(workload.name, by_batch, best, by_batch[best], statistics.median(calls))


def measure_cold_start(
    label: str,
    model: str,
    payload: dict[str, Any],
    log_dir: Path,
    extra_env: dict[str, str],
    probes: int = 3,
) -> ColdStart:
    """Process start -> first 200 from /predict, then split it with /metrics and import runs.

    The import share is the median of ``probes`` fresh interpreters doing the server's imports
    and building (not loading) the model; what remains after imports, load and warm-up is the
    server's start-up and the first request. Every run finds the page cache warm.
    """
    import httpx

    workload = Workload(label, model, payload["width"], payload["height"], payload["steps"])
    env = _server_env(workload, extra_env)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = log_dir / f"cold-{label.replace(' ', '-')}.log"
    log_dir.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "inference", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            total = None
            while time.perf_counter() - started < 600:
                if process.poll() is not None:
                    return ColdStart(
                        label, None, None, None, None, None,
                        f"server exited with {process.returncode}: "
                        + log_path.read_text()[-300:].replace("\n", " "),
                    )  # fmt: skip
                try:
                    if _http("POST", url + "/predict", payload, timeout=60).status_code == 200:
                        total = time.perf_counter() - started
                        break
                except httpx.TransportError:  # not listening yet
                    pass
                time.sleep(0.01)
            if total is None:
                return ColdStart(label, None, None, None, None, None, "no 200 within 600 s")
            metrics = _http("GET", url + "/metrics").text
        finally:
            stop_process_group(process)
    load_s = _metric(metrics, "inference_model_load_seconds")
    warmup_s = _metric(metrics, "inference_model_warmup_seconds")
    # Interpreter start + the imports the server does before it loads weights, in a fresh
    # process (page cache warm, like the server's own start after the first run).
    probe = (
        "import uvicorn, inference.app, inference.cli;"
        "from inference.models import build_model;"
        "from inference.settings import Settings;"
        "build_model(Settings())"
    )
    runs = []
    for _ in range(probes):
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True)
        if done.returncode == 0:
            runs.append(time.perf_counter() - t0)
    import_s = statistics.median(runs) if runs else None
    rest = total - sum(v for v in (import_s, load_s, warmup_s) if v is not None)
    return ColdStart(label, total, import_s, load_s, warmup_s, rest)


def _metric(text: str, name: str) -> float | None:
    match = re.search(rf"^{name} ([0-9.eE+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def build_tiny_model(folder: Path) -> tuple[str | None, str]:
    """A tiny random diffusers pipeline on disk, or (None, why not)."""
    try:
        from inference.models import tiny
    except ImportError as exc:
        return None, f"inference.models.tiny is not available ({exc})"
    try:
        import inference.models.diffusers  # noqa: F401
    except ImportError as exc:
        return None, f"the diffusers backend is not available ({exc})"
    return str(tiny.build_tiny_pipeline(folder / "tiny-sd")), ""


# -- GPU mode --------------------------------------------------------------------------------


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


# -- reporting -------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def render_markdown(report: Report) -> str:
    lines = ["# Benchmark results", ""]
    lines += [f"Command: `{report.command}`", ""]
    m = report.machine
    lines += [
        f"Machine: {m.get('cpu', '?')}, {m['cpus']} CPUs, Python {m['python']}, "
        f"{m['platform']}; load average {m['load_avg_start']} at start, "
        f"{m.get('load_avg_end', '?')} at end.",
        "",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in report.config.items()),
        "",
    ]
    ceilings = {c.workload: c for c in report.ceilings}
    lines += ["## Throughput and latency", ""]
    lines += [
        "| server | workload | concurrency | images/s | x ceiling | p50 ms | p95 ms | p99 ms "
        "| mean batch | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report.levels:
        c = ceilings.get(r.workload)
        ratio = r.images_per_s / c.images_per_s if c else None
        lines.append(
            f"| {r.server} | {r.workload} | {r.concurrency} | {_fmt(r.images_per_s)} "
            f"| {_fmt(ratio, 2)} | {_fmt(r.p50_ms)} | {_fmt(r.p95_ms)} | {_fmt(r.p99_ms)} "
            f"| {_fmt(r.mean_batch, 2)} | {r.errors} |"
        )
    lines += ["", "## Ceiling: the engine in-process, no HTTP", ""]
    lines += [
        "| workload | images/s by batch size | best batch | ceiling images/s "
        "| model call p50 ms (1 image) |",
        "|---|---|---:|---:|---:|",
    ]
    for c in report.ceilings:
        by = ", ".join(f"{b}: {_fmt(v)}" for b, v in c.images_per_s_by_batch.items())
        lines.append(
            f"| {c.workload} | {by} | {c.best_batch} | {_fmt(c.images_per_s)} "
            f"| {_fmt(c.model_call_p50_ms, 2)} |"
        )
    lines += ["", "## Ours against the peers (ratios of images/s; p95 in ms)", ""]
    lines += [
        "| workload | concurrency | ours / naive | ours / litserve | ours / ceiling "
        "| p95 ours | p95 naive | p95 litserve |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for workload, level, by_server in _by_level(report):
        ours = by_server.get("ours")
        if ours is None:
            continue
        naive, lit = by_server.get("naive"), by_server.get("litserve")
        c = ceilings.get(workload)
        lines.append(
            f"| {workload} | {level} "
            f"| {_fmt(ours.images_per_s / naive.images_per_s if naive else None, 2)} "
            f"| {_fmt(ours.images_per_s / lit.images_per_s if lit else None, 2)} "
            f"| {_fmt(ours.images_per_s / c.images_per_s if c else None, 2)} "
            f"| {_fmt(ours.p95_ms)} | {_fmt(naive.p95_ms if naive else None)} "
            f"| {_fmt(lit.p95_ms if lit else None)} |"
        )
    lines += ["", "## Cold start: process start to the first successful /predict (seconds)", ""]
    lines += [
        "| model | total | interpreter + imports | model load | warm-up | server start + "
        "first request | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for s in report.cold_starts:
        lines.append(
            f"| {s.label} | {_fmt(s.total_s, 2)} | {_fmt(s.import_s, 2)} | {_fmt(s.load_s, 2)} "
            f"| {_fmt(s.warmup_s, 2)} | {_fmt(s.rest_s, 2)} | {s.note or '-'} |"
        )
    if report.gpu:
        lines += ["", "## GPU compute bound", ""]
        lines += [f"- {k}: {v}" for k, v in report.gpu.items()]
    lines += ["", "## Goals", ""]
    lines += [f"- {g}" for g in goal_verdicts(report)]
    if report.notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {n}" for n in report.notes]
    return "\n".join(lines) + "\n"


def _by_level(report: Report) -> list[tuple[str, int, dict[str, LevelResult]]]:
    grouped: dict[tuple[str, int], dict[str, LevelResult]] = {}
    for r in report.levels:
        grouped.setdefault((r.workload, r.concurrency), {})[r.server] = r
    return [(w, c, servers) for (w, c), servers in grouped.items()]


def goal_verdicts(report: Report) -> list[str]:
    """The issue's three goals, each stated as met or missed with the measured numbers."""
    out: list[str] = []
    ceilings = {c.workload: c for c in report.ceilings}
    for workload, level, by_server in _by_level(report):
        ours = by_server.get("ours")
        c = ceilings.get(workload)
        if ours is not None and c is not None and level == 32:
            ratio = ours.images_per_s / c.images_per_s
            out.append(
                f"{'MET' if ratio >= 0.9 else 'MISSED'}: served >= 0.9 x ceiling at concurrency "
                f"32 on {workload}: {ratio:.2f} x ({ours.images_per_s:.1f} vs "
                f"{c.images_per_s:.1f} images/s)."
            )
    for workload, level, by_server in _by_level(report):
        ours = by_server.get("ours")
        if ours is None or level < 8:
            continue
        for peer in ("naive", "litserve"):
            other = by_server.get(peer)
            if other is None:
                continue
            ahead = ours.images_per_s > other.images_per_s
            p95_ok = ours.p95_ms <= other.p95_ms
            out.append(
                f"{'MET' if ahead and p95_ok else 'MISSED'}: ahead of {peer} on {workload} at "
                f"concurrency {level}: {ours.images_per_s:.1f} vs {other.images_per_s:.1f} "
                f"images/s, p95 {ours.p95_ms:.1f} vs {other.p95_ms:.1f} ms."
            )
    for workload, level, by_server in _by_level(report):
        c = ceilings.get(workload)
        if level != 1 or c is None or not workload.startswith("mock 64x64"):
            continue
        for server in ("ours", "ours-wait0"):
            r = by_server.get(server)
            if r is None:
                continue
            overhead = r.p50_ms - c.model_call_p50_ms
            parts = ", ".join(f"{k} {v:.2f}" for k, v in r.server_p50_ms.items())
            out.append(
                f"{'MET' if overhead < 5 else 'MISSED'}: serving overhead at p50 for {workload} "
                f"({server}, concurrency 1): {overhead:.2f} ms = p50 latency {r.p50_ms:.2f} ms - "
                f"model call {c.model_call_p50_ms:.2f} ms (server-side p50 ms: {parts})."
            )
    return out


def render_plot(report: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys(r.workload for r in report.levels))
    fig, axes = plt.subplots(len(workloads), 2, figsize=(11, 4 * len(workloads)), squeeze=False)
    ceilings = {c.workload: c for c in report.ceilings}
    for row, workload in enumerate(workloads):
        tput, p95 = axes[row]
        for server in dict.fromkeys(r.server for r in report.levels):
            rs = [r for r in report.levels if r.workload == workload and r.server == server]
            xs = [r.concurrency for r in rs]
            tput.plot(xs, [r.images_per_s for r in rs], marker="o", label=server)
            p95.plot(xs, [r.p95_ms for r in rs], marker="o", label=server)
        if workload in ceilings:
            tput.axhline(ceilings[workload].images_per_s, color="gray", ls="--", label="ceiling")
        p95.set_yscale("log")  # c=1 and c=64 differ by orders of magnitude
        for ax, ylabel in ((tput, "images/s"), (p95, "p95 latency (ms)")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrency")
            ax.set_ylabel(ylabel)
            ax.set_title(workload)
            ax.grid(True, alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the command -----------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 1,8,32, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"values must be >= 1, got {text!r}")
    return values


def _workload_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in ALL_WORKLOADS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown workload(s) {unknown or text!r}; choose from {','.join(ALL_WORKLOADS)}"
        )
    return names


def _server_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in ALL_SERVERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown server(s) {unknown or text!r}; choose from {','.join(ALL_SERVERS)}"
        )
    return names


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark the server against the in-process ceiling, a naive server and LitServe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run (tests)")
    parser.add_argument("--requests", type=int, help="requests per level (default 256; quick 12)")
    parser.add_argument(
        "--concurrency", type=_int_list, help="levels, default 1,8,32,64 (quick: 1,4)"
    )
    parser.add_argument(
        "--workloads",
        type=_workload_list,
        help=f"of {','.join(ALL_WORKLOADS)}; default all (tiny-sd when the diffusers extra is "
        "installed); quick: mock64",
    )
    parser.add_argument("--steps", type=int, help="mock steps (default 20; quick 2)")
    parser.add_argument(
        "--servers", type=_server_list, default=list(ALL_SERVERS), help=",".join(ALL_SERVERS)
    )
    parser.add_argument("--max-batch-size", type=int, default=8, help="ours and LitServe")
    parser.add_argument(
        "--max-wait-ms", type=float, default=10.0, help="ours (MAX_WAIT_MS) and LitServe"
    )
    parser.add_argument("--no-cold-start", action="store_true", help="skip cold-start runs")
    parser.add_argument(
        "--gpu",
        choices=["auto", "on", "off"],
        default="auto",
        help="SD 1.5 architecture, random weights, 512x512 bf16 (auto: when CUDA is available)",
    )
    parser.add_argument("--out", type=Path, default=Path("results"), help="results folder")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from tqdm import tqdm

    for noisy in ("httpx", "matplotlib"):  # one line per poll or font would drown the report
        logging.getLogger(noisy).setLevel(logging.WARNING)
    global _SETTING_NAMES
    _SETTING_NAMES = _setting_names()
    missing = [p for p in ("load.py", "naive_server.py", "litserve_server.py")
               if not (BENCH_DIR / p).is_file()]  # fmt: skip
    if missing:
        sys.stderr.write(
            f"error: bench needs a source checkout: {', '.join(missing)} not found in "
            f"{BENCH_DIR}; run it from the repository (git clone, then make bench)\n"
        )
        return 2
    quick = args.quick
    requests = args.requests or (12 if quick else 256)
    levels = args.concurrency or ([1, 4] if quick else [1, 8, 32, 64])
    steps = args.steps or (2 if quick else 20)
    chosen = args.workloads or (["mock64"] if quick else list(ALL_WORKLOADS))
    gpu = _want_gpu(args.gpu)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    log_dir = out / "logs"
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    atexit.register(shutil.rmtree, tmp, True)  # the GPU pipeline alone is about 4 GB
    notes: list[str] = []
    workloads = [
        Workload(f"mock {side}x{side}, {steps} steps", "mock", side, side, steps)
        for name, side in (("mock64", 64), ("mock256", 256))
        if name in chosen
    ]
    tiny_folder, why_not_tiny = None, "skipped in --quick mode (about 10 s)"
    if "tiny-sd" in chosen or not (quick or args.no_cold_start):
        tiny_folder, why_not_tiny = build_tiny_model(tmp)
    if "tiny-sd" in chosen:
        if tiny_folder is None:
            notes.append(f"workload tiny-sd skipped: {why_not_tiny}")
        else:
            workloads.append(
                Workload(
                    f"tiny SD 64x64, {TINY_SD_STEPS} steps",
                    tiny_folder,
                    64,
                    64,
                    TINY_SD_STEPS,
                    (("DEVICE", "cpu"),),
                    requests=min(requests, 96),
                )
            )
    sd15: Path | None = None
    if gpu:
        from inference.models import tiny

        sd15 = tiny.build_sd15_pipeline(tmp / "sd15")
        gpu_steps = args.steps or 25
        workloads.append(
            Workload(
                f"SD 1.5 arch (random) 512x512, {gpu_steps} steps, bf16",
                str(sd15),
                512,
                512,
                gpu_steps,
                (("DEVICE", "cuda"), ("DTYPE", "bfloat16")),
                requests=min(requests, 32),
            )
        )
    config = {
        "requests_per_level": requests,
        "concurrency": levels,
        "max_batch_size": args.max_batch_size,
        "max_wait_ms": args.max_wait_ms,
        "quick": quick,
    }
    report = Report(_command_line(), machine_info(), config, notes=notes)
    total = len(workloads) * (len(args.servers) * len(levels) + 1) + (
        0 if args.no_cold_start else 2
    )
    with tqdm(total=total, desc="bench", unit="run", disable=args.quiet) as bar:
        for workload in workloads:
            for name in args.servers:
                port = free_port()
                cmd, extra, ready = server_command(
                    name, port, args.max_batch_size, args.max_wait_ms
                )
                env = _server_env(workload, extra)
                bar.set_postfix_str(f"{name} starting")
                with server_process(name, cmd, env, port, ready, log_dir) as url:
                    for level in levels:
                        bar.set_postfix_str(f"{name} {workload.name} c={level}")
                        result = drive_load(
                            url, name, workload, level, workload.requests or requests, env
                        )
                        report.levels.append(result)
                        bar.update(1)
            bar.set_postfix_str(f"ceiling {workload.name}")
            report.ceilings.append(
                measure_ceiling(
                    workload,
                    args.max_batch_size,
                    workload.requests or requests,
                    repeats=1 if quick else 3,
                )
            )
            bar.update(1)
        if not args.no_cold_start:
            bar.set_postfix_str("cold start: mock")
            mock_payload = {"prompt": PROMPT, "width": 64, "height": 64, "steps": 2}
            probes = 1 if quick else 3
            report.cold_starts.append(
                measure_cold_start("mock", "mock", mock_payload, log_dir, {}, probes)
            )
            bar.update(1)
            bar.set_postfix_str("cold start: tiny diffusers")
            if tiny_folder is None:
                report.cold_starts.append(
                    ColdStart("tiny diffusers", *[None] * 5, note=why_not_tiny)
                )
            else:
                report.cold_starts.append(
                    measure_cold_start(
                        "tiny diffusers", tiny_folder, mock_payload, log_dir, {}, probes
                    )
                )
            bar.update(1)
    if gpu and sd15 is not None:
        ours = [r for r in report.levels if r.server == "ours" and "SD 1.5" in r.workload]
        best = max((r.images_per_s for r in ours), default=None)
        report.gpu = gpu_compute_bound(sd15, workloads[-1].steps, best)
    report.machine["load_avg_end"] = round(os.getloadavg()[0], 2)
    if report.machine["load_avg_start"] > 0.5 * (report.machine["cpus"] or 1):
        notes.append(
            f"the machine was busy at start (load average {report.machine['load_avg_start']} on "
            f"{report.machine['cpus']} CPUs): rerun on a quiet machine before quoting numbers"
        )
    (out / "bench.json").write_text(json.dumps(asdict(report), indent=2, default=str))
    (out / "bench.md").write_text(render_markdown(report))
    render_plot(report, out / "bench.png")
    sys.stdout.write(render_markdown(report))
    sys.stdout.write(f"\nwrote {out / 'bench.md'}, {out / 'bench.json'}, {out / 'bench.png'}\n")
    return 0


def _command_line() -> str:
    """The reproducing command, when this process was started as ``python -m inference bench``."""
    if sys.argv[1:2] == ["bench"]:
        return shlex.join(["python", "-m", "inference", *sys.argv[1:]])
    return "python -m inference bench (called in-process)"


def _want_gpu(choice: str) -> bool:
    if choice == "off":
        return False
    import torch

    available = torch.cuda.is_available()
    if choice == "on" and not available:
        raise SystemExit("error: --gpu on needs CUDA, but torch.cuda.is_available() is False")
    return available
