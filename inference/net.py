"""The one outbound guard: every URL this server fetches or calls goes through here.

A server that fetches URLs for its clients (image inputs, LoRA files, Cog's trained weights,
webhooks) can be aimed at its own network: cloud metadata on 169.254.169.254, an admin port on
localhost, a database on 10.x. So every outbound transfer passes, in order:

1. **Parse** (``parse``): http(s) only, no credentials, a host that is a valid name (labels of
   1-63 letters, digits, ``-`` or ``_``, at most 253 in all; IDNA for non-ASCII) or an IP
   literal, a port in 1-65535, no control characters. Any malformed URL is a ``Refused`` naming
   the value, never another exception.
2. **Allow** (``Policy.hosts``, a ``HostList``): exact names, ``*.example.com`` for
   subdomains, ``*`` for any host.
3. **Resolve once** and refuse any non-global address (``non_global``: loopback, private,
   link-local, shared 100.64/10, multicast, reserved, and IPv6 forms that embed such an IPv4:
   IPv4-mapped, 6to4, NAT64, Teredo) unless ``Policy.private_hosts`` names the host.
4. **Connect to the addresses that were checked**: no second lookup a rebinding DNS server
   could answer differently; TLS still verifies the certificate for the host name.
5. **Bound the transfer**: redirects are refused (their target was never checked), one total
   deadline covers connect, TLS, headers and body (a server dripping a byte a second is cut at
   the deadline, not per read), and a size cap is checked against Content-Length first, then
   against the bytes counted; fewer bytes than Content-Length promised is an error. The
   blocking face's deadline starts after the name lookup, which the system resolver bounds
   (its own timeout and attempts, /etc/resolv.conf); the async face's covers the lookup too.

Two faces share that core: ``fetch``/``download`` (blocking, ``http.client``; call them from a
worker thread) and ``post`` (async, ``httpx`` pinned to the checked address, for webhooks).
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import io
import ipaddress
import os
import re
import socket
import ssl
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import certifi
import httpx

from inference.hosts import NUMERIC, HostList, ascii_host, show

CHUNK_BYTES = 1 << 16
MAX_URL_CHARS = 8192
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")

#: ``(host, port) -> addresses``; tests pass their own to play a rebinding DNS server.
Resolver = Callable[[str, int], Iterable[str]]


class OutboundError(Exception):
    """Base of the guard's errors; ``message`` says what went wrong and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Refused(OutboundError):
    """The URL may not be fetched (malformed, host not allowed, non-global address, redirect):
    asking again changes nothing."""


class TooLarge(OutboundError):
    """The answer is over ``Policy.max_bytes``."""


class Failed(OutboundError):
    """The transfer failed (network, deadline, status, truncation); a retry may succeed.
    ``status`` is the HTTP status when the server answered one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Policy:
    """What one kind of outbound transfer may do, and the settings a refusal names as the fix."""

    hosts: HostList
    private_hosts: HostList = field(default_factory=HostList)
    deadline_s: float = 10.0
    max_bytes: int = 10_000_000
    hosts_setting: str = "the allowed hosts"
    private_fix: str = "a deployer can allow private addresses for a trusted host"
    deadline_setting: str = "the deadline"
    size_setting: str = "the size cap"


@dataclass(frozen=True)
class Url:
    """A parsed, checked URL: ``host`` is ASCII and canonical, ``target`` the request path."""

    text: str
    scheme: str
    host: str
    port: int
    target: str

    @property
    def netloc(self) -> str:
        """The Host header: the name, bracketed for IPv6, with a non-default port."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse(url: object) -> Url:
    """``url`` checked as an http(s) URL this guard may fetch, or ``Refused`` naming it."""
    if not isinstance(url, str):
        raise Refused(f"a URL must be text, got {show(url)}")
    if len(url) > MAX_URL_CHARS:
        raise Refused(f"{show(url)} is longer than {MAX_URL_CHARS} characters")
    if bad := _CONTROL.search(url):
        raise Refused(
            f"{show(url)} holds a space or control character at position {bad.start()}; "
            "percent-encode it"
        )
    try:
        parsed = httpx.URL(url)
        port = parsed.port
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise Refused(f"{show(url)} is not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https"):
        raise Refused(f"{show(url)} is not an http:// or https:// URL")
    if parsed.userinfo:
        raise Refused(f"{show(url)} holds credentials (user@); they are never sent, remove them")
    if port is not None and not 0 < port < 65536:
        raise Refused(f"{show(url)} has port {port}, outside 1-65535")
    try:
        host = ascii_host(parsed.raw_host.decode("ascii"))
    except (ValueError, UnicodeError) as exc:
        raise Refused(f"{show(url)}: {exc}") from None
    default = 443 if parsed.scheme == "https" else 80
    return Url(url, parsed.scheme, host, port or default, parsed.raw_path.decode("ascii"))


def non_global(address: str) -> str | None:
    """Why ``address`` may not be called ("loopback", "6to4 (127.0.0.1: loopback)", ...), or
    None for a public address. IPv6 forms that carry an IPv4 are judged by that IPv4."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "malformed"  # the resolver answered something that is not an address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "scoped (zone id)"
        if ip in _NAT64_LOCAL:
            return "local-use NAT64"
        if ip.teredo:
            return "Teredo"
        embedded = [
            ("IPv4-mapped", ip.ipv4_mapped),
            ("6to4", ip.sixtofour),
            ("NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None),
        ]
        for form, inner in embedded:
            if inner is not None:
                reason = non_global(str(inner))
                return f"{form} ({inner}: {reason})" if reason else None
    elif ip in _SHARED:
        return "shared (100.64.0.0/10)"
    for kind in ("unspecified", "loopback", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if ip.is_global else "non-global"


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, by the system resolver (blocking)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Checked:
    """A URL that passed the policy, with the addresses to connect to (and only those)."""

    url: Url
    addresses: tuple[str, ...]


def allow(url: str, policy: Policy) -> Url:
    """``url`` parsed and its host allowed by ``policy.hosts``, or ``Refused``."""
    parsed = parse(url)
    if not policy.hosts:
        raise Refused(f"this server fetches no URLs here ({policy.hosts_setting} is empty)")
    if not policy.hosts.matches(parsed.host):
        raise Refused(
            f"host {parsed.host!r} of {show(url)} is not allowed "
            f"({policy.hosts_setting}: {policy.hosts})"
        )
    return parsed


def vet(url: Url, addresses: Iterable[str], policy: Policy) -> Checked:
    """``url`` with ``addresses``, or ``Refused`` if one is non-global and the host may not be."""
    found = tuple(dict.fromkeys(str(a) for a in addresses))
    if not found:
        raise Failed(f"host {url.host!r} resolves to no address")
    if not policy.private_hosts.matches(url.host):
        for address in found:
            if reason := non_global(address):
                where = "is" if address == url.host else f"resolves to {address},"
                article = "an" if reason[0] in "aeiouI" else "a"
                raise Refused(
                    f"host {url.host} {where} {article} {reason} address, which this server "
                    f"does not call ({policy.private_fix})"
                )
    return Checked(url, found)


def _literal(url: Url) -> list[str] | None:
    return [url.host] if ":" in url.host or NUMERIC.fullmatch(url.host.rsplit(".")[-1]) else None


def check(url: str, policy: Policy, resolver: Resolver | None = None) -> Checked:
    """Parse, allow, resolve once and vet ``url`` (blocking: the lookup)."""
    parsed = allow(url, policy)
    try:
        found = _literal(parsed) or (resolver or system_resolver)(parsed.host, parsed.port)
        return vet(parsed, found, policy)
    except (OSError, UnicodeError) as exc:
        raise Failed(f"cannot resolve host {parsed.host!r} ({exc})") from None


async def check_async(url: str, policy: Policy, resolver: Resolver | None = None) -> Checked:
    """``check`` with the lookup in a worker thread, so the event loop never waits on DNS."""
    parsed = allow(url, policy)
    try:
        found = _literal(parsed) or await asyncio.to_thread(
            lambda: list((resolver or system_resolver)(parsed.host, parsed.port))
        )
    except (OSError, UnicodeError) as exc:
        raise Failed(f"cannot resolve host {parsed.host!r} ({exc})") from None
    return vet(parsed, found, policy)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The system's trusted roots plus certifi's (slim images may ship no CA store)."""
    context = ssl.create_default_context()
    context.load_verify_locations(certifi.where())
    return context


# -- the blocking face -------------------------------------------------------------------


def fetch(
    url: str,
    policy: Policy,
    *,
    accept: str = "*/*",
    resolver: Resolver | None = None,
    tls: ssl.SSLContext | None = None,
) -> bytes:
    """The body at ``url`` (a 200, within the policy's deadline and size), or an
    ``OutboundError``. Blocking: call it from a worker thread."""
    chunks: list[bytes] = []
    _get(url, policy, chunks.append, accept, resolver, tls)
    return b"".join(chunks)


def download(
    url: str,
    destination: Path,
    policy: Policy,
    *,
    resolver: Resolver | None = None,
    tls: ssl.SSLContext | None = None,
) -> int:
    """Stream ``url`` to ``destination`` atomically; the byte count, or an ``OutboundError``.

    The body goes to a temporary file in the same folder, is fsynced, and replaces
    ``destination`` only when complete, so a failure or a crash never leaves a partial file
    under the final name.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            size = _get(url, policy, out.write, "*/*", resolver, tls)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, destination)
        return size
    finally:
        Path(partial).unlink(missing_ok=True)


def _get(
    url: str,
    policy: Policy,
    sink: Callable[[bytes], object],
    accept: str,
    resolver: Resolver | None,
    tls: ssl.SSLContext | None,
) -> int:
    deadline = time.monotonic() + policy.deadline_s
    checked = check(url, policy, resolver)
    https = checked.url.scheme == "https"
    connection = _Pinned(checked, deadline, (tls or tls_context()) if https else None)
    try:
        headers = {"Host": checked.url.netloc, "Accept": accept}
        connection.request("GET", checked.url.target, headers=headers)
        response = connection.getresponse()
        _expect_ok(checked.url, response.status, response.reason, response.getheader("location"))
        declared = _declared_length(checked.url, response.getheader("content-length"), policy)
        size = 0
        while chunk := response.read(min(CHUNK_BYTES, policy.max_bytes + 1 - size)):
            size += len(chunk)
            if size > policy.max_bytes:
                raise _too_large(checked.url, f"more than {policy.max_bytes} bytes", policy)
            sink(chunk)
        if declared is not None and size != declared:
            raise Failed(f"{checked.url.host} sent {size} of the {declared} bytes it announced")
        return size
    except TimeoutError:
        raise _late(checked.url, policy) from None
    except ssl.SSLCertVerificationError as exc:
        raise Failed(f"{checked.url.host}'s TLS certificate was refused ({exc})") from None
    except (OSError, http.client.HTTPException) as exc:
        raise Failed(f"fetching {show(url)} failed ({type(exc).__name__}: {exc})") from None
    finally:
        connection.close()


def _expect_ok(url: Url, status: int, reason: str, location: str | None) -> None:
    if 300 <= status < 400:
        raise Refused(
            f"{url.host} answered {status} {reason}, a redirect to {show(location)}; redirects "
            "are not followed: give the final URL"
        )
    if status != 200:
        raise Failed(f"{url.host} answered {status} {reason} for {show(url.text)}", status)


def _declared_length(url: Url, header: str | None, policy: Policy) -> int | None:
    if header is None:
        return None
    if not header.isdigit():
        raise Failed(f"{url.host} sent an invalid Content-Length {show(header)}")
    if int(header) > policy.max_bytes:
        raise _too_large(url, f"{header} bytes (Content-Length)", policy)
    return int(header)


def _too_large(url: Url, size: str, policy: Policy) -> TooLarge:
    return TooLarge(
        f"{show(url.text)} is {size}, over the {policy.max_bytes}-byte cap ({policy.size_setting})"
    )


def _late(url: Url, policy: Policy) -> Failed:
    return Failed(
        f"{url.host} did not finish within {policy.deadline_s:g}s ({policy.deadline_setting})"
    )


class _Pinned(http.client.HTTPConnection):
    """HTTP(S) to the checked addresses only, with every socket wait bounded by the deadline."""

    def __init__(self, checked: Checked, deadline: float, tls: ssl.SSLContext | None) -> None:
        super().__init__(checked.url.host, checked.url.port)
        self.checked, self.deadline, self.tls = checked, deadline, tls
        self.response_class = functools.partial(_DeadlineResponse, deadline=deadline)

    def connect(self) -> None:
        error: OSError = ConnectionError("no address")
        for address in self.checked.addresses:
            try:
                sock = socket.create_connection((address, self.port), _left(self.deadline))
                break
            except TimeoutError:
                raise
            except OSError as exc:
                error = exc  # this address is unreachable from here: try the next one
        else:
            raise error
        if self.tls is not None:
            # CPython bounds the whole handshake by the socket's timeout, not each read.
            sock.settimeout(_left(self.deadline))
            sock = self.tls.wrap_socket(sock, server_hostname=self.checked.url.host)
        self.sock = sock

    def send(self, data: Any) -> None:
        if self.sock is not None:
            self.sock.settimeout(_left(self.deadline))  # sendall is bounded as a whole
        super().send(data)


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


class _DeadlineResponse(http.client.HTTPResponse):
    """A response whose status line, headers and body share one deadline, however slowly the
    server sends them: every socket read waits at most for the time left."""

    def __init__(self, sock: socket.socket, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        # Keep the socket's own reader (it holds the socket open after the connection lets go
        # of it, as for an HTTP/1.0 answer) and bound each of its reads.
        self.fp = io.BufferedReader(_DeadlineReader(self.fp.detach(), sock, deadline))


class _DeadlineReader(io.RawIOBase):
    def __init__(self, raw: Any, sock: socket.socket, deadline: float) -> None:
        self.raw, self.sock, self.deadline = raw, sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self.sock.settimeout(_left(self.deadline))
        return self.raw.readinto(buffer)

    def close(self) -> None:
        self.raw.close()
        super().close()


# -- the async face ----------------------------------------------------------------------


async def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    policy: Policy,
    *,
    resolver: Resolver | None = None,
    tls: ssl.SSLContext | None = None,
) -> int:
    """POST ``body`` to ``url`` within the policy's deadline (lookup included); the status.

    The connection goes to a checked address, with the name in ``Host`` and TLS's SNI (the
    certificate is verified for the name). A 3xx is ``Refused``; the answer's body is not read.
    """
    try:
        async with asyncio.timeout(policy.deadline_s):
            checked = await check_async(url, policy, resolver)
            return await _post(checked, body, headers, tls or tls_context())
    except TimeoutError:
        raise _late(parse(url), policy) from None


async def _post(
    checked: Checked, body: bytes, headers: Mapping[str, str], tls: ssl.SSLContext
) -> int:
    url = checked.url
    request: dict[str, Any] = {
        "content": body,
        "headers": {**headers, "host": url.netloc},
        "extensions": {"sni_hostname": url.host} if url.scheme == "https" else {},
    }
    targets = [httpx.URL(url.text).copy_with(host=address) for address in checked.addresses]
    async with httpx.AsyncClient(verify=tls, trust_env=False, timeout=None) as client:
        try:
            for target in targets[:-1]:
                try:
                    return await _send(client, url, target, request)
                except httpx.ConnectError:
                    continue  # this address is unreachable from here: try the next one
            return await _send(client, url, targets[-1], request)
        except httpx.HTTPError as exc:
            raise Failed(f"posting to {url.host} failed ({type(exc).__name__}: {exc})") from None


async def _send(
    client: httpx.AsyncClient, url: Url, target: httpx.URL, request: dict[str, Any]
) -> int:
    response = await client.send(client.build_request("POST", target, **request), stream=True)
    await response.aclose()  # the answer's body is not wanted: never read an unbounded one
    if 300 <= response.status_code < 400:
        _expect_ok(
            url, response.status_code, response.reason_phrase, response.headers.get("location")
        )
    return response.status_code
