"""Downloading a file from a URL without letting a URL reach what it should not.

Used for adapter URLs named in requests and for Cog's trained weights (``COG_WEIGHTS``). A URL
is fetched only from an allowed host, only when every address its name resolves to is public
(unless private addresses are allowed), never through a redirect (a redirect could point
anywhere), never beyond a size cap, and once per machine: the file is kept under a folder named
after the URL's hash, written under a temporary name and renamed when complete, so a crash never
leaves a partial file that looks whole.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import socket
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60


class UrlRefused(Exception):
    """The URL may not be fetched, or fetching it failed; the message says why and the fix."""


def check_url(url: str, allowed_hosts: list[str], allow_private: bool) -> str:
    """Raise ``UrlRefused`` unless ``url`` is http(s) from an allowed, public host; its host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlRefused(f"{url!r} is not an http(s) URL")
    host = parts.hostname.lower()
    if not allowed_hosts:
        raise UrlRefused(
            "URLs are off on this server; use a hub id or 'local:NAME', or ask the deployer to "
            "set LORA_ALLOWED_HOSTS"
        )
    if "*" not in allowed_hosts and host not in allowed_hosts:
        raise UrlRefused(
            f"host {host!r} is not allowed (LORA_ALLOWED_HOSTS: {', '.join(allowed_hosts)})"
        )
    if not allow_private:
        try:
            infos = socket.getaddrinfo(host, parts.port or 443, proto=socket.IPPROTO_TCP)
        except OSError as exc:
            raise UrlRefused(f"cannot resolve host {host!r}: {exc}") from None
        for info in infos:
            address = ipaddress.ip_address(info[4][0])
            if not address.is_global:
                raise UrlRefused(
                    f"host {host!r} resolves to the non-public address {address}; such "
                    "addresses are refused unless LORA_ALLOW_PRIVATE_URLS=1"
                )
    return host


def default_download_dir() -> Path:
    """HF_HOME/lora-downloads: next to the hub cache, so on Modal it is on the weights Volume."""
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "lora-downloads"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


def download_url(url: str, folder: Path, max_bytes: int, suffixes: tuple[str, ...]) -> Path:
    """The file at ``url`` in ``folder`` (downloaded unless already there); ``UrlRefused`` if
    its name lacks one of ``suffixes``, it is larger than ``max_bytes``, or the fetch fails.

    Call ``check_url`` first: this function trusts the URL.
    """
    name = Path(urlsplit(url).path).name
    if not name.endswith(suffixes):
        raise UrlRefused(f"{url!r} must name a file ending in {' or '.join(suffixes)}")
    target = folder / hashlib.sha256(url.encode()).hexdigest()[:24] / name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    opener = urllib.request.build_opener(_NoRedirects)
    try:
        with opener.open(url, timeout=TIMEOUT_S) as response:
            length = int(response.headers.get("Content-Length") or 0)
            if length > max_bytes:
                raise UrlRefused(f"{url!r} is {length} bytes, over the {max_bytes}-byte cap")
            fd, partial = tempfile.mkstemp(dir=target.parent, suffix=".partial")
            try:
                with os.fdopen(fd, "wb") as out:
                    total = 0
                    while chunk := response.read(CHUNK_BYTES):
                        total += len(chunk)
                        if total > max_bytes:
                            raise UrlRefused(f"{url!r} is over the {max_bytes}-byte cap")
                        out.write(chunk)
                os.replace(partial, target)
            finally:
                Path(partial).unlink(missing_ok=True)
    except urllib.error.HTTPError as exc:
        why = "redirects, which are not followed" if 300 <= exc.code < 400 else "answered"
        raise UrlRefused(f"{url!r} {why} (HTTP {exc.code}); give the file's final URL") from None
    except (urllib.error.URLError, OSError) as exc:
        raise UrlRefused(f"cannot download {url!r}: {exc}") from None
    log.info("downloaded %s to %s (%d bytes)", url, target, target.stat().st_size)
    return target
