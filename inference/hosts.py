"""Host names as this server's settings and its outbound guard (``inference.net``) read them.

Kept apart from ``net`` so that settings, which every runtime imports at start (deploy.py
locally included), can type their host lists without importing an HTTP client.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Any

import idna
from pydantic_core import core_schema

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
NUMERIC = re.compile(r"0x[0-9a-f]*|[0-9]+")  # a last label like this reads as an IPv4 number


def show(value: object) -> str:
    """``value`` for a message: quoted, and short, so a huge input makes no huge error."""
    text = repr(value)
    return text if len(text) <= 120 else f"{text[:100]}...' ({len(str(value))} characters)"


def ascii_host(host: str) -> str:
    """``host`` lower-cased, without one trailing dot, in ASCII (IDNA) and checked; ValueError
    naming the problem otherwise."""
    host = host.strip().lower().removesuffix(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host or (host and NUMERIC.fullmatch(host.rsplit(".", 1)[-1])):
        try:
            ip = ipaddress.ip_address(host)
            if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
                raise ValueError("zone")
            return str(ip)
        except ValueError:
            raise ValueError(
                f"{show(host)} is neither a host name nor an IP address in standard form "
                "(write IPv4 as four decimal numbers, IPv6 in brackets without a zone)"
            ) from None
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise ValueError(f"{show(host)} is not a valid international name ({exc})") from None
    if not host or len(host) > 253:
        raise ValueError(f"host name {show(host)} must have 1 to 253 characters")
    for label in host.split("."):
        if not _LABEL.fullmatch(label):
            raise ValueError(
                f"host name {show(host)} has an empty, over-long (>63) or invalid label "
                f"{show(label)}; labels hold letters, digits, '-' and '_'"
            )
    return host


class HostList:
    """A setting's list of hosts: ``"a.com, *.b.com"`` (a comma string or a list of names).

    An entry is an exact name (case and one trailing dot ignored), ``*.name`` (any subdomain of
    name, not name itself) or ``*`` (any host). Pydantic fields may be typed ``HostList``.
    """

    __slots__ = ("patterns",)

    def __init__(self, hosts: str | Iterable[str] = ()) -> None:
        entries = hosts.split(",") if isinstance(hosts, str) else list(hosts)
        if not all(isinstance(entry, str) for entry in entries):
            raise ValueError(f"hosts must be names (strings), got {show(entries)}")
        self.patterns: tuple[str, ...] = tuple(
            dict.fromkeys(_pattern(entry) for entry in entries if entry.strip())
        )

    def matches(self, host: str) -> bool:
        """Whether ``host`` (as ``parse`` gives it) is on the list."""
        return any(
            p == "*" or p == host or (p.startswith("*.") and host.endswith(p[1:]))
            for p in self.patterns
        )

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __str__(self) -> str:
        return ", ".join(self.patterns)

    def __repr__(self) -> str:
        return f"HostList({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HostList) and other.patterns == self.patterns

    def __hash__(self) -> int:
        return hash(self.patterns)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        text_or_list = core_schema.union_schema(
            [core_schema.str_schema(), core_schema.list_schema(core_schema.str_schema())]
        )
        return core_schema.json_or_python_schema(
            json_schema=core_schema.no_info_after_validator_function(cls, text_or_list),
            python_schema=core_schema.union_schema(
                [
                    core_schema.is_instance_schema(cls),
                    core_schema.no_info_after_validator_function(cls, text_or_list),
                ]
            ),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )


def _pattern(entry: str) -> str:
    entry = entry.strip().lower()
    if entry == "*":
        return entry
    if entry.startswith("*."):
        return "*." + ascii_host(entry[2:])
    return ascii_host(entry)
