"""The registry's errors: every problem of a registry named at once, and unknown model names.

A deployer who fixes one typo, restarts and meets the next one wastes a deploy per problem, so
``RegistryError`` carries the whole list. It is an ``InvalidRequest``, so a live re-weighting
call that breaks the same rules maps to a 4xx through the HTTP app's one error table, with each
problem in ``errors``; at start the CLI prints ``problems`` one per line instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from difflib import get_close_matches

from inference.errors import InvalidRequest


class RegistryError(InvalidRequest):
    """A registry file or a re-weighting breaks the registry's rules; ``problems`` lists each."""

    code = "invalid_registry"

    def __init__(self, problems: Sequence[str], field: str = "registry") -> None:
        self.problems = list(problems)
        super().__init__(
            field,
            "; ".join(self.problems),
            [{"field": field, "message": problem} for problem in self.problems],
        )


class UnknownModel(InvalidRequest):
    """A request names a model or version this server does not have; ``available`` lists what
    it has, so the client can correct the name without reading the docs."""

    code = "unknown_model"

    def __init__(self, message: str, available: Sequence[str]) -> None:
        super().__init__("model", message)
        self.available = list(available)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    close = get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def listed(names: Iterable[str]) -> str:
    """Names as a human reads them in a message: ``'a', 'b'``, or ``none`` for no names."""
    return ", ".join(repr(name) for name in names) or "none"
