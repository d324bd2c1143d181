"""``python -m tools.bench.accel``: can the server keep a fast accelerator fed?

The stand-in model (``standin.py``: a + b x n seconds a call, GIL free, photo-like images)
plays the GPU, so the host's CPU does only the serving: HTTP, JSON, queueing, encoding. Each
server (ours, LitServe, naive) serves it for every output format at each concurrency, loaded by
``wrk`` (``wrk.py``: a compiled client, so the client's CPU does not decide the result). Reported
per level: images/s, its share of the ideal (the model alone at max batch, B / (a + b x B)),
latency p50/p95, mean batch, the server's CPU ms per image (its whole process group, from
/proc) and wrk's own. Writes ``<out>/accel.md`` and ``<out>/accel.json``.

Goal checked at the highest concurrency and 512x512: ours >= 0.95 x ideal and ahead of LitServe,
for every format.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tools.bench.data import Workload
from tools.bench.processes import (
    free_port,
    machine_info,
    server_command,
    server_env,
    server_process,
)
from tools.bench.report import DEFAULT_NOISE_BAND, ahead_verdict
from tools.bench.standin import ENV, ideal_images_per_s, parse_cost
from tools.bench.wrk import group_cpu_s, run_wrk, wrk_path

MODEL = "tools.bench.standin:StandInModel"
SERVERS = ("ours", "litserve", "naive")
FORMATS = ("png", "jpeg", "webp")
GOAL_SHARE = 0.95


@dataclass
class AccelLevel:
    server: str
    size: int
    output_format: str
    concurrency: int
    images_per_s: float
    share_of_ideal: float
    p50_ms: float
    p95_ms: float
    mean_batch: float
    errors: int
    server_cpu_ms_per_image: float
    client_cpu_ms_per_image: float


def measure(args: argparse.Namespace) -> list[AccelLevel]:
    """Every server, size, format and level; one server process per (server, size)."""
    a, b = parse_cost(args.cost)
    ideal = ideal_images_per_s(a, b, args.max_batch_size)
    log_dir = args.out / "logs"
    levels: list[AccelLevel] = []
    for size in args.sizes:
        for name in args.servers:
            port = free_port()
            cmd, extra, ready = server_command(name, port, args.max_batch_size, args.max_wait_ms)
            # DEFAULT_*: the stand-in computes its images at this size in load(), not per request.
            sides = (("DEFAULT_WIDTH", str(size)), ("DEFAULT_HEIGHT", str(size)))
            workload = Workload("stand-in", MODEL, size, size, 1, ((ENV, args.cost), *sides))
            env = server_env(workload, extra)
            with server_process(name, cmd, env, port, ready, log_dir) as (url, pid):
                for fmt in args.formats:
                    body = {**workload.payload(), "output_format": fmt}
                    for concurrency in args.concurrency:
                        # Warm-up at most one batch wide: a server that keeps computing for
                        # clients that left (naive, LitServe) has at most one batch to finish.
                        warm = min(concurrency, args.max_batch_size)
                        run_wrk(url + "/predict", body, warm, args.warmup_s)
                        cpu = group_cpu_s(pid)
                        result = run_wrk(url + "/predict", body, concurrency, args.seconds)
                        cpu = group_cpu_s(pid) - cpu
                        rate = result.ok / result.wall_s
                        images = max(1, result.ok)
                        levels.append(
                            AccelLevel(
                                name, size, fmt, concurrency, rate, rate / ideal,
                                result.p50_ms, result.p95_ms, result.mean_batch, result.errors,
                                cpu * 1000 / images, result.client_cpu_s * 1000 / images,
                            )
                        )  # fmt: skip
                        if not args.quiet:
                            sys.stderr.write(f"{levels[-1]}\n")
    return levels


def verdicts(levels: Sequence[AccelLevel], formats: Sequence[str]) -> list[str]:
    """MET/MISSED lines for the goal at 512x512 and the highest concurrency measured."""
    top = max(level.concurrency for level in levels)
    at = {(x.server, x.output_format): x for x in levels if x.size == 512 and x.concurrency == top}
    lines = []
    for fmt in formats:
        ours, peer = at.get(("ours", fmt)), at.get(("litserve", fmt))
        if ours is None:
            continue
        met = ours.share_of_ideal >= GOAL_SHARE
        lines.append(
            f"- {'MET' if met else 'MISSED'}: ours >= {GOAL_SHARE} x ideal, {fmt} 512x512 c={top}: "
            f"{ours.share_of_ideal:.2f} x ({ours.images_per_s:.1f} images/s)"
        )
        if peer is not None and peer.images_per_s > 0:
            band = (DEFAULT_NOISE_BAND, "the bench's run-to-run spread; one run per level here")
            what = f"LitServe, {fmt} 512x512 c={top}"
            lines.append("- " + ahead_verdict(what, ours.images_per_s, peer.images_per_s, band))
    return lines


def render(levels: Sequence[AccelLevel], header: dict[str, object], lines: list[str]) -> str:
    rows = [
        f"| {x.size} | {x.output_format} | {x.server} | {x.concurrency} | {x.images_per_s:.1f} | "
        f"{x.share_of_ideal:.2f} | {x.p50_ms:,.0f} | {x.p95_ms:,.0f} | {x.mean_batch:.2f} | "
        f"{x.errors} | {x.server_cpu_ms_per_image:.1f} | {x.client_cpu_ms_per_image:.2f} |"
        for x in levels
    ]
    return "\n".join(
        [
            "# Stand-in accelerator: serving a fast model",
            "",
            *(f"- {key}: {value}" for key, value in header.items()),
            "",
            "| size | format | server | concurrency | images/s | share of ideal | p50 ms | "
            "p95 ms | mean batch | errors | server CPU ms/image | wrk CPU ms/image |",
            "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            "## Verdicts",
            "",
            *lines,
            "",
        ]
    )


def build_parser() -> argparse.ArgumentParser:
    def ints(text: str) -> list[int]:
        return [int(v) for v in text.split(",") if v.strip()]

    def names(choices: tuple[str, ...]) -> type:
        def parse(text: str) -> list[str]:
            chosen = [v.strip() for v in text.split(",") if v.strip()]
            if not chosen or set(chosen) - set(choices):
                raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}, got {text!r}")
            return chosen

        return parse  # type: ignore[return-value]

    parser = argparse.ArgumentParser(
        prog="python -m tools.bench.accel",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cost", default="a=0.04,b=0.01", help="seconds per call: a + b x n")
    parser.add_argument("--sizes", type=ints, default=[512, 1024], help="image sides")
    parser.add_argument("--formats", type=names(FORMATS), default=list(FORMATS))
    parser.add_argument("--servers", type=names(SERVERS), default=list(SERVERS))
    parser.add_argument("--concurrency", type=ints, default=[8, 64])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per level")
    parser.add_argument("--warmup-s", type=float, default=2.0, help="uncounted, before each")
    parser.add_argument("--max-batch-size", type=int, default=8, help="ours and LitServe")
    parser.add_argument("--max-wait-ms", type=float, default=10.0, help="ours and LitServe")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("-q", "--quiet", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    a, b = parse_cost(args.cost)
    wrk_path()  # fail before any server starts
    args.out.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    levels = measure(args)
    machine["load_avg_end"] = round(os.getloadavg()[0], 2)
    ideal = ideal_images_per_s(a, b, args.max_batch_size)
    header = {
        "command": " ".join(
            ["python -m tools.bench.accel", *(sys.argv[1:] if argv is None else argv)]
        ),
        "model": f"a + b x n seconds a call, a={a}, b={b}; ideal at batch {args.max_batch_size}: "
        f"{ideal:.1f} images/s",
        "machine": {k: machine.get(k) for k in ("cpu", "cpus", "load_avg_start", "load_avg_end")},
        "commit": machine.get("commit"),
    }
    lines = verdicts(levels, args.formats)
    text = render(levels, header, lines)
    (args.out / "accel.md").write_text(text)
    payload = {"header": header, "levels": [asdict(x) for x in levels], "verdicts": lines}
    (args.out / "accel.json").write_text(json.dumps(payload, indent=2))
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
