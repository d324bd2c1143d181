"""The report: Markdown tables, a MET/MISSED verdict per goal, and the throughput/p95 plot."""

from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path

from tools.bench.data import LevelResult, Report


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def _table(title: str, header: str, alignment: str) -> list[str]:
    """A section heading, after a blank line, then the header and alignment rows of its table."""
    return ["", f"## {title}", "", header, alignment]


def render_markdown(report: Report) -> str:
    lines = ["# Benchmark results", ""]
    lines += [f"Command: `{report.command}`", ""]
    m = report.machine
    lines += [
        f"Machine: {m.get('cpu', '?')}, {m['cpus']} CPUs, Python {m['python']}, "
        f"{m['platform']}; load average {m['load_avg_start']} at start, "
        f"{m.get('load_avg_end', '?')} at end.",
        "",
        f"Code: commit {m.get('commit', '?')}; "
        + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()),
        "",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in report.config.items()),
    ]
    ceilings = {c.workload: c for c in report.ceilings}
    lines += _table(
        "Throughput and latency",
        "| server | workload | concurrency | images/s | x ceiling | p50 ms | p95 ms | p99 ms "
        "| mean batch | errors | client CPU ms/req |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    )
    for r in report.levels:
        c = ceilings.get(r.workload)
        ratio = r.images_per_s / c.images_per_s if c else None
        lines.append(
            f"| {r.server} | {r.workload} | {r.concurrency} | {_fmt(r.images_per_s)} "
            f"| {_fmt(ratio, 2)} | {_fmt(r.p50_ms)} | {_fmt(r.p95_ms)} | {_fmt(r.p99_ms)} "
            f"| {_fmt(r.mean_batch, 2)} | {r.errors} | {_fmt(r.client_cpu_ms_per_request, 2)} |"
        )
    lines += _table(
        "Ceiling: the engine in-process, no HTTP",
        "| workload | images/s by batch size | best batch | ceiling images/s "
        "| model call p50 ms (1 image) |",
        "|---|---|---:|---:|---:|",
    )
    for c in report.ceilings:
        by = ", ".join(f"{b}: {_fmt(v)}" for b, v in c.images_per_s_by_batch.items())
        lines.append(
            f"| {c.workload} | {by} | {c.best_batch} | {_fmt(c.images_per_s)} "
            f"| {_fmt(c.model_call_p50_ms, 2)} |"
        )
    lines += _table(
        "Ours against the peers (ratios of images/s; p95 in ms)",
        "| workload | concurrency | ours / naive | ours / litserve | ours / ceiling "
        "| p95 ours | p95 naive | p95 litserve |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    )
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
    lines += _table(
        "Cold start: process start to the first successful /predict (seconds)",
        "| model | total | interpreter + imports | model load | warm-up | server start + "
        "first request | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    )
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


#: The band used when a level has fewer than two repeats: the +-10% run-to-run spread measured
#: on the 2-core machine of the earlier runs. A verdict says which band it used.
DEFAULT_NOISE_BAND = 0.10


def median_run(runs: list[LevelResult]) -> LevelResult:
    """The repeat with the median images/s, carrying every repeat's images/s."""
    ordered = sorted(runs, key=lambda r: r.images_per_s)
    middle = ordered[(len(ordered) - 1) // 2]
    return dataclasses.replace(middle, images_per_s_runs=[r.images_per_s for r in runs])


def spread(result: LevelResult) -> float | None:
    """(max - min) / median of the repeats' images/s; None with fewer than two repeats."""
    runs = result.images_per_s_runs
    if len(runs) < 2 or statistics.median(runs) <= 0:
        return None
    return (max(runs) - min(runs)) / statistics.median(runs)


def noise_band(*results: LevelResult) -> tuple[float, str]:
    """The larger measured spread of the servers compared, or the default; and how it was had."""
    measured = [s for s in map(spread, results) if s is not None]
    if len(measured) == len(results):
        counts = "/".join(str(len(r.images_per_s_runs)) for r in results)
        return max(measured), f"measured over {counts} repeats"
    return DEFAULT_NOISE_BAND, "the earlier runs' spread; this run has no repeats"


def ahead_verdict(what: str, ours: float, theirs: float, band: tuple[float, str]) -> str:
    """MET only beyond the noise band, MISSED only below it; in between, no claim either way."""
    ratio = ours / theirs
    width, source = band
    if ratio > 1 + width:
        verdict = "MET"
    elif ratio < 1 - width:
        verdict = "MISSED"
    else:
        verdict = "WITHIN NOISE (no claim)"
    return (
        f"{verdict}: ahead of {what}: {ours:.1f} vs {theirs:.1f} images/s ({ratio:.2f} x; "
        f"noise band +-{100 * width:.0f}%, {source})"
    )


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
            verdict = ahead_verdict(
                f"{peer} on {workload} at concurrency {level}",
                ours.images_per_s,
                other.images_per_s,
                noise_band(ours, other),
            )
            if verdict.startswith("MET") and ours.p95_ms > other.p95_ms:
                verdict = "MISSED" + verdict.removeprefix("MET") + " but p95 is higher"
            out.append(f"{verdict}, p95 {ours.p95_ms:.1f} vs {other.p95_ms:.1f} ms.")
    for workload, level, by_server in _by_level(report):
        if level != 1 or not workload.startswith("mock 64x64"):
            continue
        for server in ("ours", "ours-wait0"):
            r = by_server.get(server)
            if r is None or r.overhead_p50_ms is None:
                continue
            overhead = r.overhead_p50_ms
            parts = ", ".join(f"{k} {v:.2f}" for k, v in r.server_p50_ms.items())
            out.append(
                f"{'MET' if overhead < 5 else 'MISSED'}: serving overhead at p50 for {workload} "
                f"({server}, concurrency 1): {overhead:.2f} ms, the p50 over requests of the "
                f"client's latency minus the model call the server timed (server-side p50 ms: "
                f"{parts})."
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
        levels = sorted({r.concurrency for r in report.levels if r.workload == workload})
        tput.set_ylim(bottom=0)
        for ax, ylabel in ((tput, "images/s"), (p95, "p95 latency (ms)")):
            ax.set_xscale("log", base=2)
            ax.set_xticks(levels, [str(level) for level in levels])
            ax.set_xlabel("concurrency")
            ax.set_ylabel(ylabel)
            ax.set_title(workload)
            ax.grid(True, alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
