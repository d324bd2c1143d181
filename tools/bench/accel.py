"""``python -m tools.bench.accel``: can the server keep a fast accelerator fed?

The stand-in model (``standin.py``: a + b x n seconds a call, GIL free, photo-like images)
plays the GPU, so the host's CPU does only the serving: HTTP, JSON, queueing, encoding. Each
server (ours, LitServe, naive) serves it for every output format at each concurrency, loaded by
``wrk`` (``wrk.py``: a compiled client, so the client's CPU does not decide the result). Reported
per level: images/s in steady load (the rate of responses from 2 s after the first to 1 s
before the last, leaving out the clients' start and the run's cut-off end: ``--lead-s``; the
whole run's rate is its own column), its share of the ideal (the model alone at max batch,
B / (a + b x B)), latency p50/p95, mean batch, the server's CPU ms per image (its whole process
group, from /proc) and wrk's own. Writes ``<out>/accel.md`` and ``<out>/accel.json``.

Goal checked at the highest concurrency and 512x512: ours >= 0.95 x ideal and ahead of LitServe,
for every format.

``--quick`` (``make bench-accel-quick``) is issue 25's run instead: 512x512, PNG and JPEG, at 1, 8
and 64 clients, for ours before (``ours-greedy``: BATCH_POLICY=greedy), ours after (the cost
policy) and LitServe side by side, plus ours on two simulated devices (``ours-2dev``:
DEVICES=cpu,cpu) at 64; every level repeated, so each verdict names its noise band; verdicts in
``quick_verdicts``.
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
    ROOT,
    free_port,
    machine_info,
    server_command,
    server_env,
    server_process,
)
from tools.bench.report import ahead_verdict, noise_band
from tools.bench.standin import ENV, ideal_images_per_s, parse_cost
from tools.bench.wrk import STEADY_LEAD_S, group_cpu_s, run_wrk, wrk_path

MODEL = "tools.bench.standin:StandInModel"
SERVERS = ("ours", "litserve", "naive", "ours-greedy", "ours-2dev", "ours-before")
#: Variants of ours: (server to start, settings it gets).
VARIANTS = {
    "ours-greedy": ("ours", {"BATCH_POLICY": "greedy"}),
    "ours-2dev": ("ours", {"DEVICES": "cpu,cpu"}),
    "ours-before": ("ours", {}),  # served from the checkout given as --before
}
FORMATS = ("png", "jpeg", "webp")
GOAL_SHARE = 0.95
#: Issue 25's goals at 512x512 (``--quick``).
GOAL_C8_SHARE = 0.92
GOAL_C64_SHARE = 0.97
GOAL_C1_P50_MS = 5.0
GOAL_TWO_DEVICES = 1.9


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
    #: Every repeat's images/s; the other fields are the median repeat's.
    images_per_s_runs: list[float]
    #: Responses over the run's whole length, its ends included (``images_per_s`` is the steady
    #: rate when ``--lead-s`` gave the run a steady window: ``wrk.steady_rate``).
    whole_run_images_per_s: float


def measure(args: argparse.Namespace) -> list[AccelLevel]:
    """Every server, size, format and level; one server process per (server, size)."""
    log_dir = args.out / "logs"
    levels: list[AccelLevel] = []
    for size in args.sizes:
        for name in args.servers:
            port = free_port()
            base, settings = VARIANTS.get(name, (name, {}))
            root = args.before if name == "ours-before" else ROOT
            cmd, extra, ready = server_command(base, port, args.max_batch_size, args.max_wait_ms)
            # DEFAULT_*: the stand-in computes its images at this size in load(), not per request.
            sides = (("DEFAULT_WIDTH", str(size)), ("DEFAULT_HEIGHT", str(size)))
            workload = Workload("stand-in", MODEL, size, size, 1, ((ENV, args.cost), *sides))
            env = server_env(workload, {**extra, **settings}, root)
            with server_process(name, cmd, env, port, ready, log_dir, root) as (url, pid):
                for fmt in args.formats:
                    body = {**workload.payload(), "output_format": fmt}
                    for concurrency in args.concurrency:
                        if name == "ours-2dev" and concurrency != max(args.concurrency):
                            continue  # two devices only matter when the queue is full
                        level = measure_level(args, name, url, pid, body, size, concurrency)
                        levels.append(level)
                        if not args.quiet:
                            sys.stderr.write(f"{level}\n")
    return levels


def measure_level(
    args: argparse.Namespace,
    name: str,
    url: str,
    pid: int,
    body: dict[str, object],
    size: int,
    concurrency: int,
) -> AccelLevel:
    """One level: an uncounted warm-up, then ``--repeats`` measured runs; the median counts."""
    a, b = parse_cost(args.cost)
    ideal = ideal_images_per_s(a, b, args.max_batch_size)
    # Warm-up at most one batch wide: a server that keeps computing for clients that left
    # (naive, LitServe) has at most one batch to finish.
    run_wrk(url + "/predict", body, min(concurrency, args.max_batch_size), args.warmup_s)
    runs = []
    for _ in range(args.repeats):
        cpu = group_cpu_s(pid)
        result = run_wrk(url + "/predict", body, concurrency, args.seconds, args.lead_s)
        cpu = group_cpu_s(pid) - cpu
        whole_run = result.ok / result.wall_s
        rate = whole_run if result.steady_per_s is None else result.steady_per_s
        images = max(1, result.ok)
        runs.append(
            AccelLevel(
                name, size, str(body["output_format"]), concurrency, rate, rate / ideal,
                result.p50_ms, result.p95_ms, result.mean_batch, result.errors,
                cpu * 1000 / images, result.client_cpu_s * 1000 / images, [rate], whole_run,
            )
        )  # fmt: skip
    runs.sort(key=lambda run: run.images_per_s)
    median = runs[(len(runs) - 1) // 2]
    median.images_per_s_runs = [run.images_per_s for run in runs]
    return median


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
            band = noise_band(ours, peer)  # type: ignore[arg-type]
            what = f"LitServe, {fmt} 512x512 c={top}"
            lines.append("- " + ahead_verdict(what, ours.images_per_s, peer.images_per_s, band))
    return lines


def quick_verdicts(levels: Sequence[AccelLevel], formats: Sequence[str]) -> list[str]:
    """Issue 25's goals at 512x512: the cost policy against the greedy one it replaced, against
    the ideal, two devices against one, and LitServe, each MET/MISSED with its numbers."""
    at = {(x.server, x.output_format, x.concurrency): x for x in levels if x.size == 512}
    lines = []

    def line(met: bool, text: str) -> None:
        lines.append(f"- {'MET' if met else 'MISSED'}: {text}")

    for fmt in formats:
        for c in sorted({x.concurrency for x in levels}):
            ours, before = at.get(("ours", fmt, c)), at.get(("ours-greedy", fmt, c))
            peer, two = at.get(("litserve", fmt, c)), at.get(("ours-2dev", fmt, c))
            earlier = at.get(("ours-before", fmt, c))
            if ours is None:
                continue
            where = f"{fmt} 512x512 c={c}"
            goal = {8: GOAL_C8_SHARE, 64: GOAL_C64_SHARE}.get(c)
            if goal is not None:
                line(
                    ours.share_of_ideal >= goal,
                    f"ours >= {goal} x ideal, {where}: {ours.share_of_ideal:.2f} x "
                    f"({ours.images_per_s:.1f} images/s; greedy "
                    f"{before.share_of_ideal if before else float('nan'):.2f})",
                )
            if before is not None and c == 8:
                line(
                    ours.p50_ms <= before.p50_ms,
                    f"p50 no worse than greedy, {where}: {ours.p50_ms:.0f} vs "
                    f"{before.p50_ms:.0f} ms",
                )
            if before is not None and c == 1:
                line(
                    ours.p50_ms <= before.p50_ms + GOAL_C1_P50_MS,
                    f"p50 at most {GOAL_C1_P50_MS:g} ms above greedy's, {where}: "
                    f"{ours.p50_ms:.1f} vs {before.p50_ms:.1f} ms",
                )
            if ours is not None and earlier is not None:
                lines.append(
                    f"- ours against ours-before (--before), {fmt} 512x512 c={c}: "
                    f"{ours.images_per_s / max(earlier.images_per_s, 1e-9):.2f} x images/s "
                    f"({ours.images_per_s:.1f} vs {earlier.images_per_s:.1f}), p50 "
                    f"{ours.p50_ms:.0f} vs {earlier.p50_ms:.0f} ms"
                )
            if two is not None:
                ratio = two.images_per_s / max(ours.images_per_s, 1e-9)
                line(
                    ratio >= GOAL_TWO_DEVICES,
                    f"2 devices >= {GOAL_TWO_DEVICES} x one, {where}: {ratio:.2f} x "
                    f"({two.images_per_s:.1f} vs {ours.images_per_s:.1f} images/s)",
                )
            if peer is not None and peer.images_per_s > 0:
                band = noise_band(ours, peer)  # type: ignore[arg-type]
                what = f"LitServe, {where}"
                lines.append("- " + ahead_verdict(what, ours.images_per_s, peer.images_per_s, band))
    return lines


def render(levels: Sequence[AccelLevel], header: dict[str, object], lines: list[str]) -> str:
    rows = [
        f"| {x.size} | {x.output_format} | {x.server} | {x.concurrency} | {x.images_per_s:.1f} | "
        f"{x.share_of_ideal:.2f} | {x.p50_ms:,.0f} | {x.p95_ms:,.0f} | {x.mean_batch:.2f} | "
        f"{x.errors} | {x.server_cpu_ms_per_image:.1f} | {x.client_cpu_ms_per_image:.2f} | "
        f"{', '.join(f'{r:.1f}' for r in x.images_per_s_runs)} | {x.whole_run_images_per_s:.1f} |"
        for x in levels
    ]
    return "\n".join(
        [
            "# Stand-in accelerator: serving a fast model",
            "",
            *(f"- {key}: {value}" for key, value in header.items()),
            "",
            "| size | format | server | concurrency | images/s | share of ideal | p50 ms | "
            "p95 ms | mean batch | errors | server CPU ms/image | wrk CPU ms/image | "
            "images/s of each repeat | whole run images/s |",
            "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
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
    parser.add_argument("--servers", type=names(SERVERS), default=["ours", "litserve", "naive"])
    parser.add_argument("--concurrency", type=ints, default=[8, 64])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per level")
    parser.add_argument("--warmup-s", type=float, default=2.0, help="uncounted, before each")
    parser.add_argument(
        "--lead-s",
        type=float,
        default=STEADY_LEAD_S,
        help="each measured run is this much longer, and images/s is its rate from 2 s after "
        "its first response to 1 s before its last (wrk.steady_rate); 0: the whole run",
    )
    parser.add_argument("--max-batch-size", type=int, default=8, help="ours and LitServe")
    parser.add_argument("--max-wait-ms", type=float, default=10.0, help="ours and LitServe")
    parser.add_argument("--repeats", type=int, default=1, help="measured runs per level")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="issue 25's run (~8 min): 512x512, png and jpeg, c=1,8,64, ours-greedy, ours, "
        "litserve and ours-2dev, 2 repeats of 4 s; other flags given after it still apply",
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="a checkout of the code before a change (git worktree add DIR COMMIT), served "
        "as ours-before in the same run, at every level",
    )
    parser.add_argument("-q", "--quiet", action="store_true")
    return parser


QUICK = {
    "sizes": [512],
    "formats": ["png", "jpeg"],
    "servers": ["ours-greedy", "ours", "litserve", "ours-2dev"],
    "concurrency": [1, 8, 64],
    "seconds": 4.0,
    "warmup_s": 1.5,
    "repeats": 2,
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The flags; ``--quick`` sets QUICK's values as defaults, so a flag given still wins.
    ``--before`` adds ours-before to the servers (it needs the checkout, so it is never a
    default); a checkout without the package is refused before any server starts."""
    parser = build_parser()
    if parser.parse_args(argv).quick:
        parser.set_defaults(**QUICK)
    args = parser.parse_args(argv)
    if args.before is not None:
        if not (args.before / "inference" / "__main__.py").is_file():
            parser.error(f"--before {args.before}: not a checkout of this project (no inference/)")
        if "ours-before" not in args.servers:
            args.servers = ["ours-before", *args.servers]
    elif "ours-before" in args.servers:
        parser.error("the server ours-before needs --before DIR, a checkout of the code before")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
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
    lines = (quick_verdicts if args.quick else verdicts)(levels, args.formats)
    text = render(levels, header, lines)
    (args.out / "accel.md").write_text(text)
    payload = {"header": header, "levels": [asdict(x) for x in levels], "verdicts": lines}
    (args.out / "accel.json").write_text(json.dumps(payload, indent=2))
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
