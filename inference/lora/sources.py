"""From an adapter reference to a verified local safetensors file, under the deployment's rules.

Two steps: ``check`` (cheap, no network: the reference's form, LORA_DIR confinement, a local
file's existence, size and header, a URL's form and host, a hub file's presence in the cache
when offline) and ``fetch`` (``check``, then the download if the file is not here yet, then the
file's verification). The model's ``check`` hook fetches (``support.Adapters.check``), so a
download happens while the request is validated, in the service's worker threads, before the
job is queued: never on the engine's one worker, where a slow host would hold up every other
request. Hub adapters go through the Hugging Face cache (HF_HOME, on Modal the weights Volume)
with the base weights' offline rule (HF_HUB_OFFLINE); URL adapters through the outbound guard
(``download.download_url``: LORA_ALLOWED_HOSTS, LORA_URL_DEADLINE_S, LORA_MAX_FILE_BYTES).
Every error is an ``InvalidRequest`` on ``loras`` that names the adapter and the fix.
"""

from __future__ import annotations

import importlib
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from inference import net
from inference.errors import InvalidRequest
from inference.lora.download import (
    UrlRefused,
    check_url,
    default_download_dir,
    download_url,
    lora_policy,
)
from inference.settings import Settings
from inference.weights import PICKLE_SUFFIXES

#: What diffusers' ``save_lora_weights`` writes; the file a hub repo or folder is read from.
DEFAULT_FILE = "pytorch_lora_weights.safetensors"
_HUB = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+)(?P<file>(/[\w.-]+)*)(@(?P<rev>[\w./-]+))?$")
_HEADER_MAX_BYTES = 100 * 1024**2


def refused(ref: str, why: str) -> InvalidRequest:
    return InvalidRequest("loras", f"loras: adapter {ref!r}: {why}")


def hub_network_errors() -> tuple[type[Exception], ...]:
    """The transport errors huggingface_hub lets through un-wrapped (DNS, refused, timeout).

    Its 1.x releases talk through ``httpx``, 2.x through ``httpx2``; both may be installed, so
    each one present is caught rather than guessing which the Hub client uses.
    """
    found: list[type[Exception]] = []
    for name in ("httpx", "httpx2"):
        try:
            found.append(importlib.import_module(name).HTTPError)
        except ImportError:
            continue
    return tuple(found)


@dataclass(frozen=True)
class Source:
    """A parsed reference: exactly one of ``path`` (local), ``url`` or ``repo`` (hub) is set."""

    ref: str
    path: Path | None = None
    url: str | None = None
    repo: str | None = None
    filename: str = DEFAULT_FILE
    revision: str | None = None


def verify_safetensors(path: Path, ref: str, max_bytes: int) -> int:
    """Raise unless ``path`` is a whole safetensors file within ``max_bytes``; return its size.

    Read by the format's documentation (an 8-byte little-endian header length, a JSON header,
    then the tensors' bytes), without the safetensors library (no torch needed): the tensors'
    ``data_offsets`` must end exactly where the file does, so a truncated file is refused.
    """
    if path.suffix in PICKLE_SUFFIXES:
        raise refused(
            ref,
            "is a pickle, which can run code when loaded; convert it to "
            "safetensors (safetensors.torch.save_file) on a trusted machine",
        )
    if not path.is_file():
        raise refused(ref, f"no file {path.name!r} there")
    size = path.stat().st_size
    if size > max_bytes:
        raise refused(
            ref,
            f"is {size} bytes, over this server's cap (LORA_MAX_FILE_BYTES="
            f"{max_bytes}); use a smaller adapter (lower rank)",
        )
    try:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if not 2 <= length <= min(_HEADER_MAX_BYTES, size - 8):
                raise ValueError("bad header length")
            header = json.loads(f.read(length))
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
        ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
        if max(ends, default=0) != size - 8 - length:
            raise ValueError("the tensors do not end where the file does")
    except (struct.error, ValueError, OSError, TypeError, KeyError, IndexError):
        raise refused(
            ref,
            "is not a safetensors file (a pickle, truncated or corrupt); "
            "adapters are read from .safetensors files only",
        ) from None
    return size


class AdapterSources:
    """Resolves adapter references for one deployment (its LORA_* settings)."""

    def __init__(self, settings: Settings, resolver: net.Resolver | None = None) -> None:
        self.lora_dir = settings.lora_dir.resolve() if settings.lora_dir else None
        self.policy = lora_policy(settings)
        self.resolver = resolver  # tests play a DNS server with it
        self.max_bytes = settings.lora_max_file_bytes
        self.offline = settings.hf_hub_offline
        self.download_dir = settings.lora_download_dir

    def parse(self, ref: str) -> Source:
        """The reference's form, or an error saying which forms there are."""
        if ref.startswith("local:"):
            return Source(ref, path=self._local(ref, ref.removeprefix("local:")))
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", ref):
            return Source(ref, url=ref)
        match = _HUB.match(ref)
        if match is None or ".." in ref:
            raise refused(
                ref,
                "is not a hub id ('owner/name[/file.safetensors][@revision]'), "
                "'local:NAME' or an https URL",
            )
        filename = match["file"].lstrip("/") or DEFAULT_FILE
        return Source(ref, repo=match["repo"], filename=filename, revision=match["rev"])

    def _local(self, ref: str, name: str) -> Path:
        if self.lora_dir is None:
            raise refused(
                ref,
                "local adapters are off on this server (no LORA_DIR); use a hub "
                "id or ask the deployer to set LORA_DIR",
            )
        path = (self.lora_dir / name).resolve()
        if not path.is_relative_to(self.lora_dir) or not name:
            raise refused(ref, "must name a file or folder inside LORA_DIR, not outside it")
        return path / DEFAULT_FILE if path.is_dir() else path

    def check(self, ref: str) -> None:
        """Everything knowable before a download; raises ``InvalidRequest``."""
        source = self.parse(ref)
        if source.path is not None:
            verify_safetensors(source.path, ref, self.max_bytes)
        elif source.url is not None:
            try:
                check_url(source.url, self.policy)
            except UrlRefused as exc:
                raise refused(ref, str(exc)) from None
        elif source.filename.endswith(PICKLE_SUFFIXES):
            verify_safetensors(Path(source.filename), ref, self.max_bytes)  # the pickle error
        elif not source.filename.endswith(".safetensors"):
            raise refused(ref, "adapters are read from .safetensors files only; name one")
        elif self.offline and self._cached(source) is None:
            raise refused(
                ref,
                "is not in the Hugging Face cache and downloads are off "
                "(HF_HUB_OFFLINE); download it first or use another adapter",
            )

    def fetch(self, ref: str) -> Path:
        """A verified local safetensors file for ``ref`` (downloaded once per machine; a
        failed or refused download keeps nothing, so the next request tries again)."""
        self.check(ref)
        source = self.parse(ref)
        if source.path is not None:
            return source.path
        if source.url is not None:
            folder = self.download_dir or default_download_dir()
            try:
                path = download_url(
                    source.url,
                    folder,
                    self.policy,
                    (".safetensors",),
                    verify=lambda unverified: verify_safetensors(unverified, ref, self.max_bytes),
                    resolver=self.resolver,
                )
            except UrlRefused as exc:
                raise refused(ref, str(exc)) from None
        else:
            path = self._hub(source)
        verify_safetensors(path, ref, self.max_bytes)
        return path

    def _cached(self, source: Source) -> Path | None:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(source.repo, source.filename, revision=source.revision)
        return Path(found) if isinstance(found, str) else None

    def _hub(self, source: Source) -> Path:
        from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
        from huggingface_hub.errors import (
            EntryNotFoundError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        ref, repo, rev = source.ref, source.repo, source.revision
        try:
            if not self.offline and self._cached(source) is None:
                url = hf_hub_url(repo, source.filename, revision=rev)
                size = get_hf_file_metadata(url).size or 0
                if size > self.max_bytes:
                    raise refused(
                        ref,
                        f"is {size} bytes, over this server's cap "
                        f"(LORA_MAX_FILE_BYTES={self.max_bytes})",
                    )
            return Path(
                hf_hub_download(repo, source.filename, revision=rev, local_files_only=self.offline)
            )
        except RepositoryNotFoundError:
            raise refused(
                ref,
                f"no hub repository {repo!r} (or it is private: the server "
                "needs HF_TOKEN); check the id",
            ) from None
        except RevisionNotFoundError:
            raise refused(ref, f"repository {repo!r} has no revision {rev!r}") from None
        except LocalEntryNotFoundError:  # a subclass of EntryNotFoundError: caught first
            raise refused(
                ref,
                "the Hugging Face Hub is unreachable and the adapter is not in "
                "the cache; retry later or use a local adapter",
            ) from None
        except EntryNotFoundError:
            raise refused(
                ref,
                f"repository {repo!r} has no file {source.filename!r}; name the "
                f"file: '{repo}/FILE.safetensors'",
            ) from None
        except (OSError, *hub_network_errors()) as exc:  # the Hub unreachable, disk full
            raise refused(ref, f"cannot download it ({exc}); retry later") from None
