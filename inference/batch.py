"""Batch jobs: a file of requests in, images and a manifest out; resumable.

The job is runtime-agnostic: it takes a *map function* that turns a list of request dicts into
``(position, result dict or exception)`` pairs in any order. Locally that is the in-process
engine (``engine_map``); on Modal it is ``Model().generate.map(...)`` (see deploy.py). So
``python -m inference batch`` and ``modal run deploy.py::batch`` run the very same job.

Why it is shaped this way:

- Every line is validated here, before anything is sent, so a bad line costs no GPU time and
  its error names the line and the field.
- A request is identified by a hash of its validated content (plus its occurrence number, so
  two identical seedless lines are two images). Output files are named after that key, so a
  re-run skips a request whose files exist, whatever line it has moved to.
- A request without a seed gets one drawn on the first run and recorded in the manifest; a
  re-run reuses it, so retrying a failed line reproduces what the first run would have made.
- Images and manifest records are written as each result arrives (images atomically), so an
  interrupted job keeps everything it finished. The manifest is an append-only log during the
  run and is compacted to one record per input line at the end; a request still in flight
  when the job stops is recorded as ``pending`` with its seed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from inference.errors import InferenceError, InvalidRequest
from inference.schema import GenerateRequest, describe_errors, random_seed

if TYPE_CHECKING:
    from inference.engine import Engine

log = logging.getLogger(__name__)

#: ``(position in the request list, result dict or the exception that request raised)``.
Outcome = tuple[int, "dict[str, Any] | BaseException"]
#: Runs every request (GenerateRequest fields, seed fixed) and yields one outcome per request,
#: in any order. Result dicts are ``GenerateResult.model_dump()``: image data as bytes.
MapFunction = Callable[[list[dict[str, Any]]], Iterable[Outcome]]
InputFormat = Literal["auto", "jsonl", "text"]

MANIFEST_NAME = "manifest.jsonl"
_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


def generate_dict(engine: Engine, request: dict[str, Any]) -> dict[str, Any]:
    """Validate a plain-dict request, generate, and return the result as a plain dict.

    The entry point for callers that speak dicts (Modal methods, batch jobs). Invalid input
    raises ``InvalidRequest`` (a ``ValueError``, picklable across Modal's boundary) naming
    every bad field and value.
    """
    if not isinstance(request, dict):
        raise InvalidRequest(
            "request",
            f"a request must be a dict of GenerateRequest fields, got {type(request).__name__}",
        )
    try:
        validated = GenerateRequest.model_validate(request)
    except ValidationError as exc:
        errors = describe_errors(exc.errors())
        messages = "; ".join(e["message"] for e in errors)
        raise InvalidRequest(errors[0]["field"], messages) from None
    return engine.generate(validated).model_dump()


def engine_map(engine: Engine, max_in_flight: int | None = None) -> MapFunction:
    """A map function over an in-process engine: many requests in flight, so they batch.

    In-flight requests stay below the engine's queue bound, so none is refused as overloaded.
    """
    workers = max_in_flight or max(1, min(engine.max_queue_size, 2 * engine.max_batch_size))

    def map_fn(requests: list[dict[str, Any]]) -> Iterator[Outcome]:
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batch")
        try:
            futures = {pool.submit(generate_dict, engine, r): i for i, r in enumerate(requests)}
            for future in as_completed(futures):
                error = future.exception()
                yield futures[future], error if error is not None else future.result()
        finally:
            # On an interrupt, don't sit out the in-flight requests: stopping the engine
            # fails them, and the re-run redoes them.
            pool.shutdown(wait=False, cancel_futures=True)

    return map_fn


# -- reading the input -----------------------------------------------------------------------


@dataclass
class Item:
    """One non-blank input line: a valid request (with its key) or the reason it is not."""

    line: int
    raw: Any
    request: GenerateRequest | None = None
    key: str | None = None
    error: dict[str, Any] | None = None


def detect_format(path: Path, text: str) -> Literal["jsonl", "text"]:
    """JSON lines for .jsonl/.ndjson/.json, prompts for .txt, else sniff the first line."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".txt":
        return "text"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return "jsonl" if first.startswith("{") else "text"


def _canonical(request: GenerateRequest) -> str:
    return json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def read_items(path: Path, fmt: InputFormat = "auto") -> list[Item]:
    """Parse and validate every non-blank line; bad lines become items with an error."""
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
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if fmt == "text":
            raw: Any = {"prompt": line.strip()}
        else:
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                message = f"invalid JSON ({exc.msg} at column {exc.colno})"
                items.append(Item(number, line, error=_error("invalid_json", number, message)))
                continue
            if not isinstance(raw, dict):
                message = f"expected a JSON object of request fields, got {type(raw).__name__}"
                items.append(Item(number, raw, error=_error("invalid_request", number, message)))
                continue
        try:
            request = GenerateRequest.model_validate(raw)
        except ValidationError as exc:
            described = describe_errors(exc.errors())
            message = "; ".join(e["message"] for e in described)
            error = _error("invalid_request", number, message, field=described[0]["field"])
            items.append(Item(number, raw, error=error))
            continue
        canonical = _canonical(request)
        occurrence = seen.get(canonical, 0)
        seen[canonical] = occurrence + 1
        key = hashlib.sha256(f"{canonical}#{occurrence}".encode()).hexdigest()[:20]
        items.append(Item(number, raw, request=request, key=key))
    return items


def _error(kind: str, line: int, message: str, field: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": kind, "message": f"line {line}: {message}"}
    if field is not None:
        error["field"] = field
    return error


def _describe_exception(line: int, exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, InferenceError):
        return _error(exc.code, line, exc.message, getattr(exc, "field", None))
    return _error(type(exc).__name__, line, str(exc) or repr(exc))


# -- outputs and the manifest ----------------------------------------------------------------


def output_names(item: Item) -> list[str]:
    """File names of an item's images: readable prompt slug, key, image index."""
    assert item.request is not None and item.key is not None
    ascii_prompt = unicodedata.normalize("NFKD", item.request.prompt).encode("ascii", "ignore")
    slug = "-".join(re.findall(r"[a-z0-9]+", ascii_prompt.decode().lower()))[:40].strip("-")
    ext = _EXTENSIONS[item.request.output_format]
    return [f"{slug or 'image'}-{item.key[:10]}-{i}.{ext}" for i in range(item.request.num_outputs)]


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name, then rename: a crash never leaves a half image behind."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def load_manifest(path: Path) -> dict[str, dict[str, Any]]:
    """The last record per request key; unreadable lines (a crash mid-write) are skipped."""
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("key"):
            records[record["key"]] = record
    return records


@dataclass
class BatchSummary:
    """What a run did; ``failed`` lines are in the manifest with their error."""

    total: int
    done: int = 0
    skipped: int = 0
    failed: int = 0
    manifest: Path = field(default_factory=lambda: Path(MANIFEST_NAME))

    def describe(self) -> str:
        return (
            f"{self.total} requests: {self.done} generated, {self.skipped} already done, "
            f"{self.failed} failed; manifest: {self.manifest}"
        )


def run_batch(
    input_path: Path,
    output_dir: Path,
    map_fn: MapFunction,
    *,
    input_format: InputFormat = "auto",
    progress: bool = True,
) -> BatchSummary:
    """Run every request of ``input_path`` not already done, through ``map_fn``."""
    items = read_items(input_path, input_format)
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = output_dir / MANIFEST_NAME
    previous = load_manifest(manifest_path)
    summary = BatchSummary(total=len(items), manifest=manifest_path)
    records: dict[int, dict[str, Any]] = {}  # by line, for the compacted manifest

    def record(item: Item, status: str, **fields: Any) -> dict[str, Any]:
        entry = {"line": item.line, "key": item.key, "status": status, "request": item.raw}
        entry.update(seed=None, outputs=[], model=None, error=None)
        entry.update(fields)
        records[item.line] = entry
        return entry

    pending: list[Item] = []
    for item in items:
        if item.error is not None:
            record(item, "failed", error=item.error)
            summary.failed += 1
            continue
        assert item.request is not None and item.key is not None
        earlier = previous.get(item.key, {})
        seed = item.request.seed
        if seed is None and isinstance(earlier.get("seed"), int):
            seed = earlier["seed"]  # drawn by an earlier run: reuse it
        names = output_names(item)
        if all((output_dir / name).exists() for name in names):
            request = item.request.model_copy(update={"seed": seed}).model_dump(mode="json")
            model = earlier.get("model")
            record(item, "skipped", request=request, seed=seed, outputs=names, model=model)
            summary.skipped += 1
            continue
        if seed is None:  # fix the seed once, reuse it on every re-run
            seed = random_seed()
        item.request = item.request.model_copy(update={"seed": seed})
        # Until its result arrives; an interrupted run keeps the seed in the manifest.
        record(item, "pending", request=item.request.model_dump(mode="json"), seed=seed)
        pending.append(item)
    if summary.skipped:
        log.info("skipping %d requests whose outputs exist in %s", summary.skipped, output_dir)

    from tqdm import tqdm

    invalid = summary.failed
    try:
        with (
            manifest_path.open("a", encoding="utf-8") as log_file,
            tqdm(total=len(pending), unit="req", disable=not progress) as bar,
        ):
            requests = [_payload(item) for item in pending]
            seen: set[int] = set()
            for position, outcome in map_fn(requests) if requests else ():
                item = pending[position]
                seen.add(position)
                entry = _finish(item, outcome, output_dir, record)
                summary.done += entry["status"] == "ok"
                summary.failed += entry["status"] == "failed"
                log_file.write(json.dumps(entry) + "\n")
                log_file.flush()
                bar.update(1)
                bar.set_postfix(failed=summary.failed - invalid, refresh=False)
            for position, item in enumerate(pending):
                if position not in seen:
                    error = _error("missing_result", item.line, "no result came back")
                    entry = record(item, "failed", request=requests[position], error=error)
                    log_file.write(json.dumps(entry) + "\n")
                    summary.failed += 1
    finally:
        _compact(manifest_path, records)
    return summary


def _payload(item: Item) -> dict[str, Any]:
    """What the map function receives: the validated request, seed fixed, defaults left out."""
    assert item.request is not None
    return item.request.model_dump(exclude_none=True)


def _finish(
    item: Item, outcome: dict[str, Any] | BaseException, output_dir: Path, record: Any
) -> dict[str, Any]:
    assert item.request is not None
    request = item.request.model_dump(mode="json")
    seed = item.request.seed
    if isinstance(outcome, BaseException):
        error = _describe_exception(item.line, outcome)
        return record(item, "failed", request=request, seed=seed, error=error)
    names = output_names(item)
    images = outcome.get("images", [])
    if len(images) != len(names):
        message = f"expected {len(names)} images, got {len(images)}"
        error = _error("model_error", item.line, message)
        return record(item, "failed", request=request, seed=seed, error=error)
    for name, image in zip(names, images, strict=True):
        data = image["data"]  # bytes from Python callers; base64 if it came through JSON
        _write_atomic(output_dir / name, base64.b64decode(data) if isinstance(data, str) else data)
    seed = outcome.get("seed", seed)
    return record(item, "ok", request=request, seed=seed, outputs=names, model=outcome.get("model"))


def _compact(manifest_path: Path, records: dict[int, dict[str, Any]]) -> None:
    """Replace the run's append-only log with one record per input line, in line order."""
    partial = manifest_path.with_name(f".{manifest_path.name}.partial")
    with partial.open("w", encoding="utf-8") as out:
        for line in sorted(records):
            out.write(json.dumps(records[line]) + "\n")
    os.replace(partial, manifest_path)


# -- command line ----------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    from inference.engine import Engine
    from inference.settings import Settings

    if not args.input.is_file():
        problem = "is a folder" if args.input.is_dir() else "does not exist"
        sys.stderr.write(f"error: input file {args.input} {problem}\n")
        return 2
    overrides = {"model": args.model, "weights_path": args.weights_path}
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    engines: list[Engine] = []

    def map_fn(requests: list[dict[str, Any]]) -> Iterable[Outcome]:
        # Loaded only when there is work: a re-run with everything done loads no weights.
        engines.append(Engine.from_settings(settings).start())
        return engine_map(engines[0])(requests)

    try:
        summary = run_batch(
            args.input,
            args.output_dir,
            map_fn,
            input_format=args.input_format,
            progress=not args.quiet,
        )
    except KeyboardInterrupt:
        sys.stderr.write(
            f"interrupted: finished images and {args.output_dir / MANIFEST_NAME} are kept; "
            "run the same command again to resume\n"
        )
        return 130
    except (OSError, ValueError) as exc:  # unreadable input, unwritable output folder
        sys.stderr.write(f"error: {exc}\n")
        return 2
    finally:
        for engine in engines:
            engine.stop()
    sys.stdout.write(summary.describe() + "\n")
    return 1 if summary.failed else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``python -m inference batch INPUT --output-dir DIR``."""
    parser = subparsers.add_parser(
        "batch",
        help="run a file of requests in-process; resumable (see deploy.py::batch for Modal)",
        description="One request per line: JSON objects (.jsonl) or plain prompts (.txt). "
        "Writes images and manifest.jsonl to --output-dir; a re-run skips finished requests.",
    )
    parser.add_argument("input", type=Path, help="requests file (.jsonl) or prompts file (.txt)")
    parser.add_argument("--output-dir", type=Path, default=Path("out"), help="default: out/")
    parser.add_argument(
        "--input-format",
        choices=["auto", "jsonl", "text"],
        default="auto",
        help="default: from the file suffix, else sniffed",
    )
    parser.add_argument("--model", help="'mock' (default), a diffusers folder or a hub id")
    parser.add_argument("--weights-path", type=Path, help="mock weights (JSON or safetensors)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=_run)
