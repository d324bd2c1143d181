"""Running a job: every request not already done, through a map function, written as it comes.

- A request without a seed gets one drawn on the first run and recorded in the manifest; a
  re-run reuses it, so retrying a failed line reproduces what the first run would have made.
- Images and manifest records are written as each result arrives (images atomically), so an
  interrupted job keeps everything it finished. The manifest is an append-only log during the
  run and is compacted to one record per input line at the end; a request still in flight
  when the job stops is recorded as ``pending`` with its seed.
- A line may name its model (``reading``); the map function receives it as the request's
  ``model`` and routes on it, and the manifest records the ``version`` that served each line
  (``name@version``), so a job mixing models, or a model's weighted versions, says which
  version drew each image.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference.jobs.reading import (
    InputFormat,
    Item,
    ModelCheck,
    describe_exception,
    error_record,
    output_names,
    read_items,
    shown_request,
)
from inference.schema import random_seed

if TYPE_CHECKING:
    from inference.fleet import Fleet
    from inference.service import Service

log = logging.getLogger(__name__)

#: ``(position in the request list, result dict or the exception that request raised)``.
Outcome = tuple[int, "dict[str, Any] | BaseException"]
#: Runs every request (GenerateRequest fields, seed fixed, and ``model`` where the line named
#: one) and yields one outcome per request, in any order. Result dicts are
#: ``GenerateResult.model_dump()``: image data as bytes, ``version`` the version that served it.
MapFunction = Callable[[list[dict[str, Any]]], Iterable[Outcome]]

MANIFEST_NAME = "manifest.jsonl"


def service_map(service: Service, max_in_flight: int | None = None) -> MapFunction:
    """A map function over an in-process service: many requests in flight, so they batch.

    In-flight requests stay below the engine's queue bound, so none is refused as overloaded.
    """

    def generate(request: dict[str, Any]) -> dict[str, Any]:
        return service.generate(request).model_dump()

    return _pooled(generate, _workers(service, max_in_flight))


def fleet_map(fleet: Fleet, max_in_flight: int | None = None) -> MapFunction:
    """A map function over a fleet: each request on the version its ``model`` names (the
    default model without one), loaded on first use and held while it runs, exactly as
    ``/predict`` routes; each result's ``version`` says which version served it."""

    def generate(request: dict[str, Any]) -> dict[str, Any]:
        return fleet.generate(request).model_dump()

    return _pooled(generate, _workers(fleet.default, max_in_flight))


def _workers(service: Service, max_in_flight: int | None) -> int:
    s = service.settings
    return max_in_flight or max(1, min(s.max_queue_size, 2 * s.max_batch_size))


def _pooled(generate: Callable[[dict[str, Any]], dict[str, Any]], workers: int) -> MapFunction:
    """``generate`` on each request from a pool of ``workers`` threads, results as they come."""

    def map_fn(requests: list[dict[str, Any]]) -> Iterator[Outcome]:
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batch")
        try:
            futures = {pool.submit(generate, r): i for i, r in enumerate(requests)}
            for future in as_completed(futures):
                error = future.exception()
                yield futures[future], error if error is not None else future.result()
        finally:
            # On an interrupt, don't sit out the in-flight requests: stopping the engine
            # fails them, and the re-run redoes them.
            pool.shutdown(wait=False, cancel_futures=True)

    return map_fn


def _remove_partials(output_dir: Path) -> None:
    """Delete what a run killed mid-write left behind (``_write_atomic``'s temporary files)."""
    stale = list(output_dir.glob(".*.partial"))
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("removed %d unfinished files a killed run left in %s", len(stale), output_dir)


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
    check_model: ModelCheck | None = None,
    default_model: str | None = None,
) -> BatchSummary:
    """Run every request of ``input_path`` not already done, through ``map_fn``. A line
    without a ``model`` is for ``default_model`` (None: the server's default); a line naming
    a model ``check_model`` refuses is a failed line before anything runs."""
    items = read_items(input_path, input_format, check_model, default_model)
    output_dir.mkdir(parents=True, exist_ok=True)
    _remove_partials(output_dir)
    manifest_path = output_dir / MANIFEST_NAME
    previous = load_manifest(manifest_path)
    summary = BatchSummary(total=len(items), manifest=manifest_path)
    records: dict[int, dict[str, Any]] = {}  # by line, for the compacted manifest

    def record(item: Item, status: str, **fields: Any) -> dict[str, Any]:
        entry = {"line": item.line, "key": item.key, "status": status, "request": item.raw}
        entry.update(seed=None, outputs=[], model=None, version=None, error=None)
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
            request = shown_request(item, seed=seed)
            served = {name: earlier.get(name) for name in ("model", "version")}
            record(item, "skipped", request=request, seed=seed, outputs=names, **served)
            summary.skipped += 1
            continue
        if seed is None:  # fix the seed once, reuse it on every re-run
            seed = random_seed()
        item.request = item.request.model_copy(update={"seed": seed})
        # Until its result arrives; an interrupted run keeps the seed in the manifest.
        record(item, "pending", request=shown_request(item), seed=seed)
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
                    error = error_record("missing_result", item.line, "no result came back")
                    entry = record(item, "failed", request=shown_request(item), error=error)
                    log_file.write(json.dumps(entry) + "\n")
                    summary.failed += 1
    finally:
        _compact(manifest_path, records)
    return summary


def _payload(item: Item) -> dict[str, Any]:
    """What the map function receives: the validated request, seed fixed, defaults left out."""
    assert item.request is not None
    payload = item.request.model_dump(exclude_none=True)
    if item.model is not None:
        payload["model"] = item.model
    return payload


def _finish(
    item: Item, outcome: dict[str, Any] | BaseException, output_dir: Path, record: Any
) -> dict[str, Any]:
    assert item.request is not None
    request = shown_request(item)
    seed = item.request.seed
    if isinstance(outcome, BaseException):
        error = describe_exception(item.line, outcome)
        return record(item, "failed", request=request, seed=seed, error=error)
    names = output_names(item)
    images = outcome.get("images", [])
    if len(images) != len(names):
        message = f"expected {len(names)} images, got {len(images)}"
        error = error_record("model_error", item.line, message)
        return record(item, "failed", request=request, seed=seed, error=error)
    for name, image in zip(names, images, strict=True):
        data = image["data"]  # bytes from Python callers; base64 if it came through JSON
        _write_atomic(output_dir / name, base64.b64decode(data) if isinstance(data, str) else data)
    seed = outcome.get("seed", seed)
    served = {name: outcome.get(name) for name in ("model", "version")}
    # What the model's safety checker said of each output (null: none ran).
    nsfw = [image.get("nsfw") for image in images]
    return record(item, "ok", request=request, seed=seed, outputs=names, nsfw=nsfw, **served)


def _compact(manifest_path: Path, records: dict[int, dict[str, Any]]) -> None:
    """Replace the run's append-only log with one record per input line, in line order."""
    partial = manifest_path.with_name(f".{manifest_path.name}.partial")
    with partial.open("w", encoding="utf-8") as out:
        for line in sorted(records):
            out.write(json.dumps(records[line]) + "\n")
    os.replace(partial, manifest_path)
