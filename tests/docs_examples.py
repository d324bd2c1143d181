"""The code blocks of README.md and docs/, read the way the examples test runs them.

A block is run when the line before its fence is ``<!-- run -->``, or ``<!-- run: checkout -->``
for a command that reads the checkout itself (run from the repository root, not the page's working
folder); ``<!-- file: NAME -->`` writes the block to NAME in the page's working folder instead (a
module a later block imports); ``<!-- server: PATH -->`` marks a command that serves on port 8000
until stopped: it is started on a free port, must answer 200 at PATH, and is then stopped. Every
other ``bash`` or ``python`` block must be named in the test's list of exceptions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\w*)[^\n]*$")
MARKER = re.compile(r"^<!-- (?P<verb>run|file|server): ?(?P<arg>\S*) ?-->$|^<!-- run -->$")
#: Languages that are examples; others (text, toml, yaml) are shown, never run.
EXAMPLES = ("bash", "python")


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    marker: str  # "run", "file", "server" or "" (not run)
    arg: str = ""  # the marker's argument: a file name, "checkout", a readiness path

    @property
    def first_line(self) -> str:
        return self.code.splitlines()[0] if self.code else ""


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of one page, with the marker on the line before each."""
    lines = page.read_text().splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end] != "```":
            end += 1
        previous = lines[index - 1].strip() if index else ""
        marker = MARKER.match(previous)
        verb = (marker["verb"] or "run") if marker else ""
        found.append(
            Block(
                page=str(page.relative_to(ROOT)),
                line=index + 1,
                language=opening[1],
                code="\n".join(lines[index + 1 : end]) + "\n",
                marker=verb,
                arg=(marker["arg"] or "") if marker else "",
            )
        )
        index = end + 1
    return found
