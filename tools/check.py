"""``python -m tools.check [ROOT]``: validate every runtime's deployment files before a push.

Each platform validates its files only after an upload and a build (minutes per mistake), so
the rules they enforce are checked here, offline, in one pass: the Space (README front matter
and Dockerfile), Cog (cog.yaml and predict.py), Modal (deploy.py) and the lock
(requirements.lock) they install from. Every problem is printed
as ``file:line: message`` and any problem makes the exit status 1, so CI can gate on it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from inference.extras import MissingExtra
from tools.checks import Problem

#: One module per runtime, each exposing ``check(root: Path) -> list[Problem]``.
CHECK_MODULES: tuple[str, ...] = (
    "tools.checks.space",
    "tools.checks.cog",
    "tools.checks.modal",
    "tools.checks.lock",
)


def run_checks(root: Path) -> list[Problem]:
    """Every problem found by every runtime check, in module order."""
    problems: list[Problem] = []
    for name in CHECK_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and not exc.name.startswith("tools."):  # a parser from the extra
                raise MissingExtra("python -m tools.check", "tools") from None
            if exc.name != name:
                raise
            # Loud, never a silent skip: a check that cannot run is a failed check.
            source = Path(__file__).parent / "checks" / f"{name.rsplit('.', 1)[1]}.py"
            problems.append(
                Problem(source, None, f"the check module {name} is missing from this checkout")
            )
            continue
        problems.extend(module.check(root))
    return problems


def _relative(problem: Problem, root: Path) -> str:
    try:
        file = problem.file.resolve().relative_to(root.resolve())
    except ValueError:
        file = problem.file
    return str(Problem(file, problem.line, problem.message))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.check",
        description="validate the Space, Cog and Modal deployment files; exit 1 on any problem",
    )
    parser.add_argument(
        "root",
        nargs="?",
        type=Path,
        default=Path("."),
        help="repository root holding README.md, Dockerfile, cog.yaml, deploy.py (default: .)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """0: no problem; 1: problems, one ``file:line: message`` per line; 2: bad arguments or
    the tools extra missing."""
    root: Path = build_parser().parse_args(argv).root
    if not root.is_dir():
        sys.stderr.write(f"error: {root} is not a directory; pass the repository root\n")
        return 2
    try:
        problems = run_checks(root)
    except MissingExtra as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        return 2
    for problem in problems:
        sys.stdout.write(_relative(problem, root) + "\n")
    if problems:
        sys.stderr.write(f"{len(problems)} problem(s) found\n")
        return 1
    sys.stdout.write(f"ok: {', '.join(m.rsplit('.', 1)[1] for m in CHECK_MODULES)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
