"""Reading a version's backend string the way ``MODEL`` is read, without loading anything.

``models.build_model`` tries, in order: ``mock``; your own class (``package.module:Class`` or
an entry point name in ``diffusion_serve.models``); a diffusers folder or hub id. The registry
sorts a string into those same kinds at start, so a typo is caught before any version loads,
but it imports nothing and downloads nothing: whether a class imports or a folder holds a
pipeline is found out when the version loads (its own error then, for that version only).

Two stricter rules than ``MODEL`` has, because a registry is new and ambiguity costs a deploy:
a bare word must be ``mock`` or an installed entry point (``MODEL=gpt2`` would be tried as a
legacy hub id; write hub ids as ``owner/name``), and a folder is a path that exists or starts
with ``/``, ``.`` or ``~``. A relative folder is relative to the registry file, like its
weights paths, so the registry works from any working directory.
"""

from __future__ import annotations

import re
from importlib.metadata import entry_points
from pathlib import Path

from inference.registry.problems import did_you_mean
from inference.registry.spec import BackendKind

ENTRY_POINT_GROUP = "diffusion_serve.models"
_CLASS_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FORMS = (
    "'mock', 'package.module:Class', an entry point name in "
    f"{ENTRY_POINT_GROUP!r}, a hub id 'owner/name', or a folder './path'"
)


def classify(backend: str, base_dir: Path) -> tuple[BackendKind, str]:
    """The backend's kind and its string as ``build_model`` should get it (a relative folder
    made absolute against ``base_dir``); ``ValueError`` naming the forms it could take."""
    if backend == "mock":
        return "mock", backend
    if _CLASS_PATH.match(backend):
        return "class", backend
    local = base_dir / Path(backend).expanduser()
    if backend.startswith(("/", ".", "~")) or (backend and local.is_dir()):
        return "folder", str(local.resolve())
    if _HUB_ID.match(backend):
        return "hub", backend
    names = sorted(entry.name for entry in entry_points(group=ENTRY_POINT_GROUP))
    if backend in names:
        return "entry_point", backend
    hint = did_you_mean(backend, ["mock", *names])
    raise ValueError(f"backend {backend!r} is not a form a model can take{hint}; use {_FORMS}")
