"""Getting diffusers weights onto a machine: download from the Hub, safetensors only, and check.

One function serves every runtime: Modal's download step fills its Volume with it, Cog's
``setup()`` and the Space's Dockerfile call it (or ``python -m inference download``), and the
diffusers backend calls it with ``local_files_only`` to find a hub model in the cache. Only
safetensors are ever fetched or loaded: a pickle checkpoint can run code when it is unpickled.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

from inference.errors import ModelLoadError

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
#: Weight files that unpickle (run code) when loaded: never downloaded, never loaded.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
#: Per-component files a diffusers pipeline needs besides its weights.
COMPONENT_PATTERNS = ("*.json", "*.txt", "*.model", "*.safetensors")
#: Precision variants and training leftovers that sit next to the default weights on the Hub;
#: the loader reads the default files, so fetching these would only double the download.
IGNORE_PATTERNS = ("*.fp16.*", "*.fp16-*", "*.bf16.*", "*.bf16-*", "*non_ema*", "*.onnx*")


def download_command(model: str, revision: str | None) -> str:
    """The shell command that puts ``model`` into the local Hugging Face cache."""
    command = f"python -m inference download {model}"
    return f"{command} --revision {revision}" if revision else command


def pipeline_components(folder: Path) -> list[str]:
    """Names of the pipeline's component folders, read from its ``model_index.json``."""
    index_path = folder / "model_index.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {str(index_path)!r}: {exc}") from exc
    return [
        name
        for name, value in index.items()
        if not name.startswith("_")
        and isinstance(value, list)
        and len(value) == 2
        and value[0] is not None
    ]


def check_safetensors(folder: Path) -> None:
    """Refuse a pipeline folder whose model components have no safetensors weights.

    A component with a ``config.json`` (UNet, VAE, text encoders, transformers) holds weights;
    tokenizers and schedulers do not. The error names the component, what is there instead and
    how to convert it, so nobody is tempted to switch the check off.
    """
    for name in pipeline_components(folder):
        component = folder / name
        if not (component / "config.json").is_file():
            continue
        files = [p for p in component.iterdir() if p.is_file()]
        if any(p.name.endswith(".safetensors") for p in files):
            continue
        pickles = sorted(p.name for p in files if p.name.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise ModelLoadError(
                f"component {name!r} of {str(folder)!r} has only pickle weights {pickles}; "
                "this server loads safetensors only (a pickle can run code when loaded). "
                "Convert once on a trusted machine: DiffusionPipeline.from_pretrained(path)"
                ".save_pretrained(path, safe_serialization=True)"
            )
        raise ModelLoadError(
            f"component {name!r} of {str(folder)!r} has no weights (*.safetensors); the "
            "download is incomplete, the folder is not a diffusers pipeline, or (for a hub "
            "model, whose pickle files are never downloaded) the repository ships only pickle "
            "weights (.bin/.ckpt): convert them with save_pretrained(..., safe_serialization="
            "True) on a trusted machine and serve that folder"
        )


def download_weights(
    model: str,
    revision: str | None,
    cache_dir: Path | None = None,
    *,
    local_files_only: bool = False,
) -> Path:
    """Fetch hub pipeline ``model`` at ``revision`` (safetensors only) and return its folder.

    The folder is a snapshot inside the Hugging Face cache (``cache_dir``, else HF_HOME's hub
    cache), so the loader and later downloads reuse it. ``local_files_only`` finds an earlier
    download without any network access; a miss raises ``ModelLoadError`` with the command to run.
    """
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{model!r}" + (f" at revision {revision!r}" if revision else "")
    cache = str(cache_dir) if cache_dir is not None else None
    try:
        index = Path(
            hf_hub_download(
                model,
                "model_index.json",
                revision=revision,
                cache_dir=cache,
                local_files_only=local_files_only,
            )
        )
        patterns = ["model_index.json"] + [
            f"{name}/{pattern}"
            for name in pipeline_components(index.parent)
            for pattern in COMPONENT_PATTERNS
        ]
        folder = Path(
            snapshot_download(
                model,
                revision=revision,
                cache_dir=cache,
                allow_patterns=patterns,
                ignore_patterns=list(IGNORE_PATTERNS),
                local_files_only=local_files_only,
            )
        )
    except LocalEntryNotFoundError as exc:
        from huggingface_hub import constants

        if local_files_only:
            raise ModelLoadError(
                f"model {where} is not in the Hugging Face cache "
                f"({cache or constants.HF_HUB_CACHE}) and downloads are off (HF_HUB_OFFLINE); "
                "download it first with: "
                f"{download_command(model, revision)}"
            ) from exc
        raise ModelLoadError(
            f"cannot download model {where}: the Hugging Face Hub is unreachable ({exc}); "
            f"on a machine with access run: {download_command(model, revision)}"
        ) from exc
    except GatedRepoError as exc:
        raise ModelLoadError(
            f"model {where} is gated: accept its licence on huggingface.co and set HF_TOKEN"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelLoadError(
            f"model {model!r} is neither a local folder nor a Hugging Face repository "
            "(or it is private: set HF_TOKEN)"
        ) from exc
    except RevisionNotFoundError as exc:
        raise ModelLoadError(
            f"model {model!r} has no revision {revision!r}; MODEL_REVISION takes a commit hash, "
            "branch or tag of that repository"
        ) from exc
    except EntryNotFoundError as exc:
        raise ModelLoadError(
            f"model {where} has no model_index.json, so it is not a diffusers pipeline; "
            "choose a repository in the diffusers format"
        ) from exc
    except OSError as exc:  # disk full, permissions, network errors surfaced as OSError
        raise ModelLoadError(f"cannot download model {where}: {exc}") from exc
    check_safetensors(folder)
    log.info("model %s is at %s", where, folder)
    return folder


def find_pipeline(
    source: str, revision: str | None, cache_dir: Path | None = None, offline: bool = False
) -> Path:
    """The local pipeline folder: ``source`` itself, or its snapshot in the HF cache (downloaded
    unless ``offline``)."""
    path = Path(source).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(
                f"{str(path)!r} has no model_index.json, so it is not a diffusers pipeline "
                "folder; save one with pipeline.save_pretrained(folder)"
            )
        return path
    looks_local = source.startswith(("/", ".", "~")) or not _HUB_ID.match(source)
    if looks_local:
        raise ModelLoadError(
            f"model folder {source!r} does not exist; MODEL takes 'mock', a folder "
            "with model_index.json, or a hub id such as 'stabilityai/sd-turbo'"
        )
    if revision is None:
        log.warning(
            "model %r has no MODEL_REVISION: the hub's latest files are used; pin a commit "
            "hash for reproducible deployments",
            source,
        )
    return download_weights(source, revision, cache_dir, local_files_only=offline)


# -- CLI: python -m inference download -------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``download``: fetch a hub pipeline into the cache (Cog, Space image builds, Modal)."""
    parser = subparsers.add_parser(
        "download", help="download a hub model's safetensors weights into the HF cache"
    )
    parser.add_argument("model", nargs="?", help="hub id (default: the MODEL setting)")
    parser.add_argument("--revision", help="commit hash or tag (default: MODEL_REVISION)")
    parser.add_argument(
        "--cache-dir", type=Path, help="cache folder (default: HF_HOME's hub cache)"
    )
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from inference.extras import require
    from inference.settings import Settings

    require("huggingface_hub", "diffusers", "python -m inference download")

    settings = Settings()
    model = args.model or settings.model
    revision = args.revision or (settings.model_revision if not args.model else None)
    if model == "mock" or Path(model).exists():
        sys.stderr.write(f"{model!r} needs no download (the mock model or a local folder)\n")
        return 0
    folder = download_weights(
        model, revision, args.cache_dir, local_files_only=settings.hf_hub_offline
    )
    sys.stdout.write(f"{folder}\n")
    return 0
