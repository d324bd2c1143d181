"""Which webhook targets this server may call, checked after DNS resolution.

A server that POSTs to any URL it is given can be aimed at its own network (cloud metadata at
169.254.169.254, an admin port on localhost, a database on 10.x). So a webhook URL must be
http(s), and every address its host resolves to must be public: loopback, private,
link-local and other non-global addresses are refused, unless the deployer names the host in
``WEBHOOK_ALLOWED_HOSTS``. The sender checks again before every attempt and connects to the
address it checked, so a name that re-resolves elsewhere in between changes nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

import httpx

from inference.errors import InvalidRequest

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver, off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _non_global(address: str) -> str | None:
    """Why ``address`` may not be called (loopback, private, ...), or None if it is public."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind in ("unspecified", "loopback", "link_local", "private", "multicast", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if ip.is_global else "non-global"


async def check_target(
    url: str, allowed: frozenset[str], resolver: Resolver | None = None, field: str = "webhook"
) -> list[str]:
    """The addresses to call for ``url`` ([] for an allowed host); ``InvalidRequest`` naming
    ``field`` when the URL is not http(s) or its host resolves to a refused address."""
    resolver = resolver or resolve
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise InvalidRequest(field, f"{field} is not a valid URL ({exc}), got {url!r}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidRequest(field, f"{field} must be an http:// or https:// URL, got {url!r}")
    host = parsed.host.lower()
    if host in allowed:
        return []
    try:
        ipaddress.ip_address(host)
        addresses = [host]  # a literal address needs no resolving
    except ValueError:
        addresses = []
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        addresses = addresses or await resolver(host, port)
    except OSError as exc:
        raise InvalidRequest(field, f"{field} host {host!r} does not resolve ({exc})") from None
    for address in addresses:
        if reason := _non_global(address):
            where = "is" if address == host else f"resolves to {address},"
            article = "an" if reason[0] in "aeiou" else "a"
            raise InvalidRequest(
                field,
                f"{field} host {host} {where} {article} {reason} address; this server does not "
                "call "
                "loopback, private or link-local addresses (a deployer can allow a host name "
                "with WEBHOOK_ALLOWED_HOSTS)",
            )
    if not addresses:
        raise InvalidRequest(field, f"{field} host {host!r} resolves to no address")
    return addresses
