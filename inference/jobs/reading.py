"""Reading a job file: one request per non-blank line, each validated before anything runs.

A bad line costs no GPU time and its error names the line and the field. A request is
identified by a hash of its validated content (plus its occurrence number, so two identical
seedless lines are two images); its output files are named after that key.

An image field of a JSON line names a file relative to the job file's folder (a ``data:`` URI
or an http(s) URL passes through as in the API). Paths that lead outside that folder, by
``..``, an absolute path or a symbolic link, are refused: a job file must not read what its
author could not put next to it. The file's bytes join the request, so the key changes when
the image does, and the whole job's images are held in memory while it runs.

A JSON line may name its ``model`` (a name, or ``name@version`` to pin a version) as
``/predict`` does, so one job can mix models. The model is not a request field (which model
serves a request is decided before each version validates it with its own limits), so it is
kept beside the request; it joins the key, so the same prompt on two models is two images.
An optional ``check_model`` (the registry's router) refuses an unknown name before anything runs.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from inference import codec
from inference.errors import InferenceError, InvalidRequest
from inference.schema import IMAGE_FIELDS, GenerateRequest
from inference.validation import parse

InputFormat = Literal["auto", "jsonl", "text"]
#: Raises ``InvalidRequest`` (the registry's ``UnknownModel``) for a model this job cannot use.
ModelCheck = Callable[[str], object]


@dataclass
class Item:
    """One non-blank input line: a valid request (with its key) or the reason it is not."""

    line: int
    raw: Any
    request: GenerateRequest | None = None
    key: str | None = None
    error: dict[str, Any] | None = None
    #: The model the line names (``name`` or ``name@version``); None: the default model.
    model: str | None = None


def detect_format(path: Path, text: str) -> Literal["jsonl", "text"]:
    """JSON lines for .jsonl/.ndjson/.json, prompts for .txt, else sniff the first line."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".txt":
        return "text"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return "jsonl" if first.startswith("{") else "text"


def _canonical(request: GenerateRequest, model: str | None) -> str:
    fields = request.model_dump(mode="json")
    if model is not None:  # absent for a line without one: its key is what it always was
        fields["model"] = model
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def read_items(
    path: Path,
    fmt: InputFormat = "auto",
    check_model: ModelCheck | None = None,
    default_model: str | None = None,
) -> list[Item]:
    """Parse and validate every non-blank line; bad lines become items with an error. A line
    without a ``model`` gets ``default_model`` (None: the server's default model)."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM from a Windows editor is no error
    except FileNotFoundError:
        raise FileNotFoundError(f"input file {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"input file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None
    if fmt == "auto":
        fmt = detect_format(path, text)
    items: list[Item] = []
    seen: dict[str, int] = {}

    def bad(number: int, raw: Any, kind: str, message: str, field: str | None = None) -> None:
        items.append(Item(number, raw, error=error_record(kind, number, message, field)))

    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if fmt == "text":
            raw: Any = {"prompt": line.strip()}
        else:
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                bad(number, line, "invalid_json", f"invalid JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(raw, dict):
                message = f"expected a JSON object of request fields, got {type(raw).__name__}"
                bad(number, raw, "invalid_request", message)
                continue
        try:
            model = _model_of(raw.get("model", default_model), check_model)
            fields = {name: value for name, value in raw.items() if name != "model"}
            request = parse(with_files(fields, path.parent))
        except InvalidRequest as exc:
            bad(number, raw, exc.code, exc.message, exc.field)
            continue
        canonical = _canonical(request, model)
        occurrence = seen.get(canonical, 0)
        seen[canonical] = occurrence + 1
        key = hashlib.sha256(f"{canonical}#{occurrence}".encode()).hexdigest()[:20]
        items.append(Item(number, raw, request=request, key=key, model=model))
    return items


def _model_of(model: Any, check_model: ModelCheck | None) -> str | None:
    """The line's ``model``, checked by ``check_model`` where the job has a registry."""
    if model is None:
        return None
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest(
            "model", f"model must be a model name or name@version, got {json.dumps(model)}"
        )
    if check_model is not None:
        check_model(model)
    return model


def with_files(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``raw`` with each image field that names a file replaced by the file's bytes."""
    resolved = dict(raw)
    for name in IMAGE_FIELDS:
        value = raw.get(name)
        if isinstance(value, str) and not value.lower().startswith(("data:", "http:", "https:")):
            resolved[name] = _read_inside(folder, value, name)
    return resolved


def _read_inside(folder: Path, value: str, name: str) -> bytes:
    root = folder.resolve()
    path = (root / value).resolve()
    if not path.is_relative_to(root):
        raise InvalidRequest(
            name,
            f"{name}: {value!r} is outside the job file's folder {root}; put the image in that "
            "folder (or below it) and name it relative to it",
        )
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InvalidRequest(name, f"{name}: there is no file {value!r} in {root}") from None
    except OSError as exc:
        raise InvalidRequest(name, f"{name}: cannot read {value!r}: {exc.strerror}") from None


def shown_request(item: Item, **update: Any) -> dict[str, Any]:
    """The request as the manifest records it: JSON, with image fields as the line wrote them
    (a path, not megabytes of base64)."""
    assert item.request is not None
    shown = item.request.model_copy(update=update).model_dump(mode="json")
    if item.model is not None:
        shown["model"] = item.model
    for name in IMAGE_FIELDS:
        if shown.get(name) is not None and isinstance(item.raw, dict):
            shown[name] = item.raw.get(name)
    return shown


def error_record(kind: str, line: int, message: str, field: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": kind, "message": f"line {line}: {message}"}
    if field is not None:
        error["field"] = field
    return error


def describe_exception(line: int, exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, InferenceError):
        return error_record(exc.code, line, exc.message, getattr(exc, "field", None))
    return error_record(type(exc).__name__, line, str(exc) or repr(exc))


def output_names(item: Item) -> list[str]:
    """File names of an item's images: readable prompt slug, key, image index."""
    assert item.request is not None and item.key is not None
    ascii_prompt = unicodedata.normalize("NFKD", item.request.prompt).encode("ascii", "ignore")
    slug = "-".join(re.findall(r"[a-z0-9]+", ascii_prompt.decode().lower()))[:40].strip("-")
    suffix = codec.FORMATS[item.request.output_format].suffix
    name = f"{slug or 'image'}-{item.key[:10]}"
    return [f"{name}-{i}{suffix}" for i in range(item.request.num_outputs)]
