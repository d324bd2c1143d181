"""Per-client rate limiting: a token bucket per verified identity.

A client must not be able to pick its own bucket. So a bearer token names the bucket only when
it is the valid token (AUTH_TOKEN is set and it matches): with auth off, a fresh random token per
request would otherwise be a fresh bucket per request. Every other request is keyed by its
address. Spaces and Modal put a proxy in front of the app, so the peer address is the proxy's;
the client's address is then read from X-Forwarded-For, but only when the peer is one of
TRUSTED_PROXIES (anyone else could write that header; ``http.server`` turns uvicorn's own
reading of it off unless TRUSTED_PROXIES is set). Buckets are bounded in number (least recently
seen evicted), so a flood of addresses cannot grow memory.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import secrets
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from fastapi import Request
from starlette.exceptions import HTTPException as StarletteHTTPException

if TYPE_CHECKING:
    from inference.settings import Settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RateLimiter:
    """Token buckets: ``burst`` requests at once, refilled at ``per_minute``."""

    def __init__(self, per_minute: int, burst: int, max_clients: int = 10_000) -> None:
        self.rate_per_s = per_minute / 60.0
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, client: str, now: float | None = None) -> float:
        """Spend one token of ``client``'s bucket: 0.0 if allowed, else seconds until one."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate_per_s)
            allowed = tokens >= 1.0
            self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return 0.0 if allowed else (1.0 - tokens) / self.rate_per_s


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def client_address(request: Request, trusted: list[Network]) -> str:
    """The client's address: the peer's, or X-Forwarded-For's last untrusted hop when the peer
    is a trusted proxy."""
    peer = request.client.host if request.client else ""
    if not trusted or not any((a := _address(peer)) and a in net for net in trusted):
        return peer
    hops = [h for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            return peer  # a garbled header: fall back to the proxy itself
        if not any(address in net for net in trusted):
            return str(address)
    return str(_address(hops[0])) if hops else peer


def client_key(request: Request, trusted: list[Network], token: str | None) -> str:
    """Who is asking: the valid ``token`` when the request carries it (hashed, never kept in
    memory as is), else the address; any other token is the sender's to choose, so it is
    ignored."""
    auth = request.headers.get("authorization", "")
    given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    if token and given and secrets.compare_digest(given.encode(), token.encode()):
        return "token:" + hashlib.sha256(given.encode()).hexdigest()[:32]
    return "address:" + client_address(request, trusted)


class RateLimit:
    """The dependency that answers 429 with Retry-After once a client's bucket is empty."""

    def __init__(self, settings: Settings) -> None:
        self.limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
        self.trusted = [ipaddress.ip_network(n, strict=False) for n in settings.trusted_proxies]
        self.per_minute = settings.rate_limit_per_minute
        self.token = settings.auth_token.get_secret_value() if settings.auth_token else None

    def check(self, request: Request) -> None:
        wait = self.limiter.take(client_key(request, self.trusted, self.token))
        if wait:
            request.app.state.metrics.rate_limited.inc()
            raise StarletteHTTPException(
                429,
                f"too many requests from this client ({self.per_minute} a minute, "
                f"RATE_LIMIT_PER_MINUTE); retry in {math.ceil(wait)}s",
                headers={"Retry-After": str(math.ceil(wait))},
            )
