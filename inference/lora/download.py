"""Downloading a file from a URL through the one outbound guard, once per machine.

Used for adapter URLs named in requests and for Cog's trained weights (``COG_WEIGHTS``). The
transfer is ``inference.net``'s: an allowed host, public addresses only (unless private ones
are allowed), the connection to the address that was checked, no redirects, a size cap checked
against Content-Length and the bytes counted, one total deadline. The file is kept under a
folder named after the URL's hash and appears under its final name only once it is complete
and ``verify`` accepted it, so a truncated or corrupt download is never served as a whole file:
the next request downloads it again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from inference import net
from inference.hosts import HostList
from inference.settings import Settings

log = logging.getLogger(__name__)

_PRIVATE_FIX = "a deployer can allow them with LORA_ALLOW_PRIVATE_URLS=1"


class UrlRefused(Exception):
    """The URL may not be fetched, or fetching it failed; the message says why and the fix."""


def lora_policy(settings: Settings) -> net.Policy:
    """Adapter URLs in requests: LORA_ALLOWED_HOSTS, LORA_MAX_FILE_BYTES, LORA_URL_DEADLINE_S."""
    return net.Policy(
        hosts=settings.lora_allowed_hosts,
        private_hosts=HostList("*") if settings.lora_allow_private_urls else HostList(),
        deadline_s=settings.lora_url_deadline_s,
        max_bytes=settings.lora_max_file_bytes,
        hosts_setting="LORA_ALLOWED_HOSTS",
        private_fix=_PRIVATE_FIX,
        deadline_setting="LORA_URL_DEADLINE_S",
        size_setting="LORA_MAX_FILE_BYTES",
    )


def weights_policy(settings: Settings) -> net.Policy:
    """Cog's trained weights: the deployer names the URL, so any host, but still public only."""
    return net.Policy(
        hosts=HostList("*"),
        private_hosts=HostList("*") if settings.lora_allow_private_urls else HostList(),
        deadline_s=settings.weights_url_deadline_s,
        max_bytes=settings.weights_url_max_bytes,
        hosts_setting="any host",
        private_fix=_PRIVATE_FIX,
        deadline_setting="WEIGHTS_URL_DEADLINE_S",
        size_setting="WEIGHTS_URL_MAX_BYTES",
    )


def check_url(url: str, policy: net.Policy) -> None:
    """Raise ``UrlRefused`` unless ``url`` is a well-formed http(s) URL on an allowed host.

    No DNS lookup: the addresses are checked when the file is downloaded, by the lookup whose
    answer the connection then uses.
    """
    if not policy.hosts:
        raise UrlRefused(
            "URLs are off on this server; use a hub id or 'local:NAME', or ask the deployer to "
            f"set {policy.hosts_setting}"
        )
    try:
        net.allow(url, policy)
    except net.OutboundError as exc:
        raise UrlRefused(exc.message) from None


def default_download_dir() -> Path:
    """HF_HOME/lora-downloads: next to the hub cache, so on Modal it is on the weights Volume."""
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "lora-downloads"


# File systems refuse names over 255 bytes (ENAMETOOLONG); the download's temporary name adds
# 12. A longer last path segment (the client chooses it) is replaced by the URL's hash.
_MAX_NAME_BYTES = 200

_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(target: Path) -> threading.Lock:
    """One lock per file, so concurrent requests for a new URL download it once."""
    with _locks_guard:
        return _locks.setdefault(target, threading.Lock())


def download_url(
    url: str,
    folder: Path,
    policy: net.Policy,
    suffixes: tuple[str, ...],
    verify: Callable[[Path], object] = lambda path: None,
    resolver: net.Resolver | None = None,
) -> Path:
    """The file at ``url`` in ``folder`` (downloaded unless already there); ``UrlRefused`` if
    its name lacks one of ``suffixes`` or the transfer fails or is refused.

    ``verify(path)`` sees a complete download before it takes the final name; whatever it
    raises propagates and nothing is kept. ``resolver`` replaces the system's DNS (tests).
    """
    name = Path(urlsplit(url).path).name
    suffix = next((s for s in suffixes if name.endswith(s)), None)
    if suffix is None:
        raise UrlRefused(f"{url!r} must name a file ending in {' or '.join(suffixes)}")
    digest = hashlib.sha256(url.encode()).hexdigest()[:24]
    if len(name.encode()) > _MAX_NAME_BYTES:
        name = digest + suffix
    target = folder / digest / name
    with _lock(target):
        if target.is_file():
            return target
        unverified = target.with_name(f".{name}.unverified")
        try:
            size = net.download(url, unverified, policy, resolver=resolver)
            verify(unverified)
            os.replace(unverified, target)
        except net.OutboundError as exc:
            raise UrlRefused(exc.message) from None
        finally:
            unverified.unlink(missing_ok=True)
    log.info("downloaded %s to %s (%d bytes)", url, target, size)
    return target
