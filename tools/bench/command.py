"""``python -m tools.bench``: its flags, and the run that measures every server and reports."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from tools import bench as package  # the package docstring is this command's --help
from tools.bench.data import PROMPT, ColdStart, Report, Workload
from tools.bench.measure import (
    build_tiny_model,
    drive_load,
    gpu_compute_bound,
    measure_ceiling_isolated,
    measure_cold_start,
)
from tools.bench.processes import (
    ALL_SERVERS,
    free_port,
    machine_info,
    server_command,
    server_env,
    server_process,
)
from tools.bench.report import median_run, render_markdown, render_plot

#: mock64/mock256: the mock model (cost linear in images: batching gains little on a CPU);
#: tiny-sd: a tiny random SD pipeline whose per-call overhead batching amortises, as on a GPU.
ALL_WORKLOADS = ("mock64", "mock256", "tiny-sd")
PROG = "python -m tools.bench"
TINY_SD_STEPS = 10


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


def _names(kind: str, choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    """An argparse type: comma-separated names, each one of ``choices``."""

    def parse(text: str) -> list[str]:
        names = [v.strip() for v in text.split(",") if v.strip()]
        unknown = [n for n in names if n not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {kind}(s) {unknown or text!r}; choose from {','.join(choices)}"
            )
        return names

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=package.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run (tests)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of each level (the median is reported, the spread is the noise band)",
    )
    parser.add_argument("--requests", type=int, help="requests per level (default 256; quick 12)")
    parser.add_argument(
        "--concurrency", type=_int_list, help="levels, default 1,8,32,64 (quick: 1,4)"
    )
    parser.add_argument(
        "--workloads",
        type=_names("workload", ALL_WORKLOADS),
        help=f"of {','.join(ALL_WORKLOADS)}; default all (tiny-sd when the diffusers extra is "
        "installed); quick: mock64",
    )
    parser.add_argument("--steps", type=int, help="mock steps (default 20; quick 2)")
    parser.add_argument(
        "--servers",
        type=_names("server", ALL_SERVERS),
        default=list(ALL_SERVERS),
        help=",".join(ALL_SERVERS),
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags, set up logging as the server does, and run the benchmark."""
    from pydantic import ValidationError

    from inference.logs import configure_logging
    from inference.settings import Settings, describe_settings_errors

    args = build_parser().parse_args(argv)
    try:
        configure_logging(Settings().log_level)
    except ValidationError as exc:
        for message in describe_settings_errors(exc):
            sys.stderr.write(f"error: {message}\n")
        return 2
    return run(args, _command_line() if argv is None else f"{PROG} (called in-process)")


def run(args: argparse.Namespace, command: str = PROG) -> int:
    """Measure every server, workload and level in ``args``; write and print the report."""
    import logging

    from tqdm import tqdm

    for noisy in ("httpx", "matplotlib"):  # one line per poll or font would drown the report
        logging.getLogger(noisy).setLevel(logging.WARNING)
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
        from tools import tiny

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
    for workload in workloads:
        count = workload.requests or requests
        if skipped := [level for level in levels if level > count]:
            notes.append(f"{workload.name}: concurrency {skipped} skipped, only {count} requests")
    config = {
        "requests_per_level": requests,
        "concurrency": levels,
        "max_batch_size": args.max_batch_size,
        "max_wait_ms": args.max_wait_ms,
        "quick": quick,
    }
    report = Report(command, machine_info(), config, notes=notes)
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
                env = server_env(workload, extra)
                bar.set_postfix_str(f"{name} starting")
                with server_process(name, cmd, env, port, ready, log_dir) as (url, _):
                    for level in levels:
                        if level > (workload.requests or requests):
                            bar.update(1)  # fewer requests than clients: not that level
                            continue
                        bar.set_postfix_str(f"{name} {workload.name} c={level}")
                        runs = [
                            drive_load(
                                url, name, workload, level, workload.requests or requests, env
                            )
                            for _ in range(1 if quick else max(1, args.repeats))
                        ]
                        report.levels.append(median_run(runs))
                        bar.update(1)
            bar.set_postfix_str(f"ceiling {workload.name}")
            report.ceilings.append(
                measure_ceiling_isolated(
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
            report.cold_starts.append(measure_cold_start("mock", "mock", mock_payload, log_dir, {}))
            bar.update(1)
            bar.set_postfix_str("cold start: tiny diffusers")
            if tiny_folder is None:
                report.cold_starts.append(
                    ColdStart("tiny diffusers", *[None] * 5, note=why_not_tiny)
                )
            else:
                report.cold_starts.append(
                    measure_cold_start("tiny diffusers", tiny_folder, mock_payload, log_dir, {})
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
    """The reproducing command of this process (``python -m tools.bench ...``)."""
    return shlex.join([*PROG.split(), *sys.argv[1:]])


def _want_gpu(choice: str) -> bool:
    if choice == "off":
        return False
    import torch

    available = torch.cuda.is_available()
    if choice == "on" and not available:
        raise SystemExit("error: --gpu on needs CUDA, but torch.cuda.is_available() is False")
    return available
