"""requirements.lock, the versions every install takes, kept true to pyproject.toml.

CI, ``make serve``, the Space's Dockerfile and the Modal image install pyproject.toml's ranges
with the lock as pip's constraints (``-c``), and Cog's requirements-cog.txt repeats its pins. A
constraint only narrows: a package the lock does not list floats again, and a pin outside a range
that pyproject.toml has since moved fails the install with a resolver error far from its cause.
So after an edit of pyproject.toml without ``make lock``, this check says which package and what
to run. torch stays out of the lock (each runtime installs its own CUDA or CPU build of the
Makefile's ``TORCH`` first), and so do the CUDA libraries that only PyPI's torch wheels pull in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tools.checks import Problem
from tools.checks.cog_files import COMMENT, Pin, parse_pin, project_pins

LOCK = "requirements.lock"
#: Installed with each runtime's own torch build, never from the lock.
UNLOCKED = re.compile(r"^(torch|triton|nvidia-.+|cuda-.+)$")
RELOCK = "run `make lock` to re-resolve it"


@dataclass(frozen=True)
class Lock:
    """The lock's pins by name: a universal lock may pin one name per Python range (markers)."""

    path: Path
    pins: dict[str, list[Pin]]

    def version(self, name: str) -> set[str]:
        return {pin.pinned or "" for pin in self.pins.get(name, [])}


def read_lock(root: Path) -> Lock | None:
    """``root/requirements.lock``, or None when it is missing (``check`` reports that)."""
    path = root / LOCK
    if not path.is_file():
        return None
    pins: dict[str, list[Pin]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = COMMENT.sub("", line).strip()
        if text and not text.startswith("-"):
            pin = parse_pin(text, number)
            pins.setdefault(pin.name or text, []).append(pin)
    return Lock(path, pins)


def check(root: Path) -> list[Problem]:
    """Every way ``root/requirements.lock`` disagrees with pyproject.toml or holds torch."""
    lock = read_lock(root)
    if lock is None:
        message = f"{LOCK} is missing: CI and every image install from it; {RELOCK}"
        return [Problem(root / LOCK, None, message)]
    problems: list[Problem] = []
    for name, pins in lock.pins.items():
        for pin in pins:
            if pin.requirement is None or pin.pinned is None:
                message = f"{pin.text!r} is not an exact pin (name==version); {RELOCK}"
                problems.append(Problem(lock.path, pin.line, message))
            elif UNLOCKED.match(name):
                message = (
                    f"{name} must stay out of the lock: each runtime installs its own torch build "
                    f"and the CUDA libraries that come with it; drop it with `make lock` (its "
                    f"UNLOCKED pattern in the Makefile names what is left out)"
                )
                problems.append(Problem(lock.path, pin.line, message))
    if not (root / "pyproject.toml").is_file():
        return problems
    for name, declared in project_pins(root)[0].items():
        if UNLOCKED.match(name):
            continue
        if name not in lock.pins:
            message = f"{name} is a dependency in pyproject.toml that {LOCK} does not pin; {RELOCK}"
            problems.append(Problem(lock.path, None, message))
            continue
        for pin in lock.pins[name]:
            for requirement in declared:
                if pin.pinned is not None and pin.pinned not in requirement.specifier:
                    message = (
                        f"{name}=={pin.pinned} is outside pyproject.toml's "
                        f"'{requirement.text}'; {RELOCK}"
                    )
                    problems.append(Problem(lock.path, pin.line, message))
    return problems
