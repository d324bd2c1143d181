"""Fetching an image field given as an http(s) URL: off unless IMAGE_URL_HOSTS names the host.

A server that fetches URLs for its clients can be pointed at its own network (cloud metadata
endpoints, admin ports), so a fetch must pass, in order:

1. the host is allowed by IMAGE_URL_HOSTS (exact names, ``*.example.com`` for subdomains, ``*``);
2. every address the name resolves to is public (not private, loopback, link-local, reserved),
   unless IMAGE_URL_ALLOW_PRIVATE is set, and the connection goes to an address that was
   checked (no second lookup a rebinding DNS server could answer differently);
3. the answer is a 200 (redirects are not followed: their target was never checked), arrives
   within IMAGE_URL_TIMEOUT_S and holds at most MAX_IMAGE_BYTES.

The standard library's ``http.client`` does the request, so the server needs no HTTP client.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, urlsplit

from inference.errors import InvalidRequest, PayloadTooLarge

if TYPE_CHECKING:
    from inference.settings import Settings

CHUNK_BYTES = 65536


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``host`` matches one of IMAGE_URL_HOSTS' patterns."""
    host = host.lower().rstrip(".")
    return any(
        p == "*" or p == host or (p.startswith("*.") and host.endswith(p[1:])) for p in patterns
    )


def _private(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])  # drop an IPv6 zone id
    mapped = getattr(ip, "ipv4_mapped", None)
    return not (mapped or ip).is_global


def fetch_image(url: str, field: str, settings: Settings) -> bytes:
    """The bytes at ``url``, or an ``InvalidRequest`` naming ``field`` and what to do."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not settings.url_hosts:
        raise InvalidRequest(
            field,
            f"{field} is a URL, but this server does not fetch image URLs (IMAGE_URL_HOSTS is "
            "empty); send the image itself: base64, a data: URI or a multipart upload",
        )
    if not host_allowed(host, settings.url_hosts):
        raise InvalidRequest(
            field,
            f"{field}: host {host!r} is not one this server fetches from (IMAGE_URL_HOSTS="
            f"{settings.image_url_hosts}); send the image itself instead",
        )
    https = parts.scheme.lower() == "https"
    port = parts.port or (443 if https else 80)
    try:
        addresses = [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    except OSError as exc:
        raise InvalidRequest(field, f"{field}: cannot resolve host {host!r} ({exc})") from None
    blocked = [a for a in addresses if _private(a)]
    if blocked and not settings.image_url_allow_private:
        raise InvalidRequest(
            field,
            f"{field}: host {host!r} resolves to {blocked[0]}, a private or loopback address "
            "this server does not fetch from (IMAGE_URL_ALLOW_PRIVATE); use a public URL",
        )
    deadline = time.monotonic() + settings.image_url_timeout_s
    try:
        return _get(parts, addresses[0], port, https, field, settings.max_image_bytes, deadline)
    except TimeoutError:
        raise InvalidRequest(
            field,
            f"{field}: {host} did not send the image within {settings.image_url_timeout_s:g}s "
            "(IMAGE_URL_TIMEOUT_S); send the image itself instead",
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        raise InvalidRequest(field, f"{field}: fetching {url} failed ({exc})") from None


def _get(
    parts: SplitResult,
    address: str,
    port: int,
    https: bool,
    field: str,
    limit: int,
    deadline: float,
) -> bytes:
    """GET the URL from ``address``, reading at most ``limit`` bytes before ``deadline``."""
    host = parts.hostname or ""
    timeout = max(0.001, deadline - time.monotonic())
    connection = (_PinnedTLS if https else _Pinned)(host, port, address, timeout)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("GET", target, headers={"Accept": "image/*"})
        response = connection.getresponse()
        if response.status != 200:
            where = response.getheader("location")
            redirect = f" to {where} (redirects are not followed; send that URL)" if where else ""
            raise InvalidRequest(
                field, f"{field}: {host} answered {response.status} {response.reason}{redirect}"
            )
        declared = response.getheader("content-length")
        chunks, size = [], 0
        while size <= limit:
            if declared and declared.isdigit() and int(declared) > limit:
                break
            if time.monotonic() > deadline:
                raise TimeoutError
            connection.socket.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = response.read(CHUNK_BYTES)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
        raise PayloadTooLarge(
            field,
            f"{field}: the image at {host} is larger than this server takes (MAX_IMAGE_BYTES="
            f"{limit}); send a smaller file",
        )
    finally:
        connection.close()


class _Pinned(http.client.HTTPConnection):
    """An HTTP connection to an address resolved and checked beforehand. ``socket`` stays set
    after http.client lets go of ``sock`` (an HTTP/1.0 answer), so reads keep a deadline."""

    socket: socket.socket

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = self.socket = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedTLS(http.client.HTTPSConnection):
    """HTTPS to a checked address; the certificate is still verified for the host name."""

    socket: socket.socket

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        context: ssl.SSLContext = self._context  # type: ignore[attr-defined]
        self.sock = self.socket = context.wrap_socket(sock, server_hostname=self.host)
