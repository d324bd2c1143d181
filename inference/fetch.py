"""Fetching an image field given as an http(s) URL: off unless INPUT_URL_HOSTS names the host.

The fetch goes through the one outbound guard (``inference.net``): the host must be allowed by
INPUT_URL_HOSTS (exact names, ``*.example.com`` for subdomains, ``*``), every address it
resolves to must be public unless INPUT_URL_ALLOW_PRIVATE is set, the connection goes to the
address that was checked, redirects are refused, and the whole transfer (connect, headers,
body) ends within INPUT_URL_DEADLINE_S and MAX_IMAGE_BYTES. Here the guard's errors become the
request's own: 413 for a file too large, 422 naming the field for the rest.

Blocking: validation calls it from the service's worker threads, never on the event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from inference import net
from inference.errors import InvalidRequest, PayloadTooLarge
from inference.hosts import HostList

if TYPE_CHECKING:
    from inference.settings import Settings


def image_policy(settings: Settings) -> net.Policy:
    """What fetching an image URL may do on this deployment, naming the settings to change."""
    return net.Policy(
        hosts=settings.input_url_hosts,
        private_hosts=HostList("*") if settings.input_url_allow_private else HostList(),
        deadline_s=settings.input_url_deadline_s,
        max_bytes=settings.max_image_bytes,
        hosts_setting="INPUT_URL_HOSTS",
        private_fix="a deployer can allow them with INPUT_URL_ALLOW_PRIVATE=1; use a public URL",
        deadline_setting="INPUT_URL_DEADLINE_S",
        size_setting="MAX_IMAGE_BYTES",
    )


def fetch_image(
    url: str, field: str, settings: Settings, resolver: net.Resolver | None = None
) -> bytes:
    """The bytes at ``url``, or an ``InvalidRequest`` (``PayloadTooLarge``) naming ``field``.

    ``resolver`` replaces the system's DNS (tests play a rebinding server with it).
    """
    if not settings.input_url_hosts:
        raise InvalidRequest(
            field,
            f"{field} is a URL, but this server does not fetch image URLs (INPUT_URL_HOSTS is "
            "empty); send the image itself: base64, a data: URI or a multipart upload",
        )
    try:
        return net.fetch(url, image_policy(settings), accept="image/*", resolver=resolver)
    except net.TooLarge as exc:
        raise PayloadTooLarge(field, f"{field}: {exc.message}; send a smaller file") from None
    except net.OutboundError as exc:
        raise InvalidRequest(field, f"{field}: {exc.message}") from None
