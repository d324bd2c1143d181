"""Replicate's trained weights: what Cog's ``setup(weights=...)`` (``COG_WEIGHTS``) names.

Replicate hands a fine-tune or a trained LoRA to a container as ``COG_WEIGHTS``, usually a URL.
The deployer sets it, not a client, so its host needs no allow-list; private and loopback
addresses are still refused unless LORA_ALLOW_PRIVATE_URLS is set, and the download has a
total deadline (WEIGHTS_URL_DEADLINE_S) and cap (WEIGHTS_URL_MAX_BYTES). The file is downloaded
once per machine through the outbound guard (``download.download_url``; a ``.safetensors`` one
is verified before it is kept), then served as what it is:

- a ``.safetensors`` LoRA (its tensor names hold ``lora``): the default adapter (DEFAULT_LORAS),
  kept under LORA_DIR (the download folder, when LORA_DIR is unset) and named ``local:...``;
- another ``.safetensors`` file with the mock model: the mock's weights (``WEIGHTS_PATH``);
- a ``.tar``/``.tar.gz`` archive of a diffusers folder: the model (``MODEL``), unpacked once with
  tarfile's ``data`` filter (no links out, no absolute paths) and held to the same
  safetensors-only rule as any pipeline folder.
"""

from __future__ import annotations

import re
import shutil
import tarfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from inference import net
from inference.errors import InvalidRequest, ModelLoadError
from inference.lora.download import (
    UrlRefused,
    check_url,
    default_download_dir,
    download_url,
    weights_policy,
)
from inference.lora.sources import verify_safetensors
from inference.settings import Settings
from inference.weights import check_safetensors

SUFFIXES = (".safetensors", ".tar", ".tar.gz", ".tgz")
URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(weights: str) -> bool:
    return bool(URL.match(weights))


def trained_weights(
    url: str, settings: Settings, resolver: net.Resolver | None = None
) -> dict[str, Any]:
    """The settings that serve the weights at ``url`` (downloaded once), or ``ModelLoadError``.

    ``resolver`` replaces the system's DNS (tests).
    """
    folder = settings.lora_dir or settings.lora_download_dir or default_download_dir()
    policy = weights_policy(settings)

    def verify(unverified: Path) -> None:
        if Path(urlsplit(url).path).name.endswith(".safetensors"):
            verify_safetensors(unverified, url, settings.weights_url_max_bytes)

    try:
        check_url(url, policy)
        path = download_url(url, folder, policy, SUFFIXES, verify, resolver)
    except UrlRefused as exc:
        raise ModelLoadError(f"Cog weights: {exc}") from None
    except InvalidRequest as exc:
        raise ModelLoadError(f"Cog weights: {exc.message.removeprefix('loras: ')}") from None
    if path.name.endswith(".safetensors"):
        if not _is_lora(path):
            return {"weights_path": path}
        ref = f"local:{path.relative_to(folder)}"
        return {"lora_dir": folder, "default_loras": [{"ref": ref, "scale": 1.0}]}
    return {"model": str(_unpack(path))}


def _is_lora(path: Path) -> bool:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return any("lora" in key.lower() for key in f.keys())  # noqa: SIM118 (not a dict)


def _unpack(archive: Path) -> Path:
    """The diffusers folder inside ``archive``, unpacked next to it once."""
    target = archive.parent / "unpacked"
    if not target.is_dir():
        partial = archive.parent / "unpacking"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(partial, filter="data")
        except (tarfile.TarError, OSError) as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise ModelLoadError(
                f"Cog weights {archive.name!r} is not a readable tar: {exc}"
            ) from None
        partial.rename(target)
    candidates = [target, *sorted(p for p in target.iterdir() if p.is_dir())]
    folder = next((p for p in candidates if (p / "model_index.json").is_file()), None)
    if folder is None:
        raise ModelLoadError(
            f"Cog weights {archive.name!r} holds no diffusers folder (model_index.json at its top "
            "or one level down); archive the folder pipeline.save_pretrained wrote"
        )
    check_safetensors(folder)
    return folder
