"""``python -m inference batch INPUT --output-dir DIR``: a job file run in-process."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from inference.jobs.runner import MANIFEST_NAME, Outcome, fleet_map, run_batch


def _run(args: argparse.Namespace) -> int:
    from inference.cli import model_settings
    from inference.fleet import Fleet

    if not args.input.is_file():
        problem = "is a folder" if args.input.is_dir() else "does not exist"
        sys.stderr.write(f"error: input file {args.input} {problem}\n")
        return 2
    settings, choice = model_settings(args)
    fleet = Fleet.from_settings(settings)  # reads the registry; loads nothing yet
    if choice is not None:
        fleet.registry.route(choice)  # an unknown --model: one line listing the names, exit 2
    started: list[Fleet] = []

    def map_fn(requests: list[dict[str, Any]]) -> Iterable[Outcome]:
        # Loaded only when there is work: a re-run with everything done loads no weights.
        fleet.default.start()
        started.append(fleet)
        return fleet_map(fleet)(requests)

    try:
        summary = run_batch(
            args.input,
            args.output_dir,
            map_fn,
            input_format=args.input_format,
            progress=not args.quiet,
            check_model=fleet.registry.route,
            default_model=choice,
        )
    except KeyboardInterrupt:
        sys.stderr.write(
            f"interrupted: finished images and {args.output_dir / MANIFEST_NAME} are kept; "
            "run the same command again to resume\n"
        )
        return 130
    except (OSError, ValueError) as exc:  # unreadable input, unwritable output folder
        sys.stderr.write(f"error: {exc}\n")
        return 2
    finally:
        for running in started:
            running.stop()
            running.default.stop()
    sys.stdout.write(summary.describe() + "\n")
    return 1 if summary.failed else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from inference.cli import add_model_flags

    """Add ``python -m inference batch INPUT --output-dir DIR``."""
    parser = subparsers.add_parser(
        "batch",
        help="run a file of requests in-process; a re-run resumes where it stopped",
        description="One request per line: JSON objects (.jsonl) or plain prompts (.txt). "
        "Writes images and manifest.jsonl to --output-dir; a re-run skips finished requests. "
        'With a registry a JSON line may name its model ("model": "name" or '
        '"name@version"); --model names it for lines that do not.',
    )
    parser.add_argument("input", type=Path, help="requests file (.jsonl) or prompts file (.txt)")
    parser.add_argument("--output-dir", type=Path, default=Path("out"), help="default: out/")
    parser.add_argument(
        "--input-format",
        choices=["auto", "jsonl", "text"],
        default="auto",
        help="default: from the file suffix, else sniffed",
    )
    add_model_flags(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run)
