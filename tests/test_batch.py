"""Batch jobs run locally: images and a manifest out, bad lines recorded, re-runs resume."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inference.codec import decode
from inference.errors import ModelError
from inference.jobs import MANIFEST_NAME, read_items, run_batch, service_map
from inference.schema import GenerateRequest
from inference.service import Service
from tests.conftest import make_service

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"steps": 3, "width": 64, "height": 64}

GOOD_SEEDED = json.dumps({"prompt": "a red fox", "seed": 11, **SMALL})
GOOD_SEEDLESS = json.dumps({"prompt": "a blue whale", "num_outputs": 2, **SMALL})
TOO_WIDE = json.dumps({"prompt": "wide", "width": 2048, "height": 64, "steps": 3})
LINES = [
    GOOD_SEEDED,  # 1
    GOOD_SEEDLESS,  # 2
    '{"prompt": "broken", ',  # 3: invalid JSON
    json.dumps({"prompt": "too many steps", "steps": 500}),  # 4: invalid field
    "",  # 5: blank, ignored
    "[1, 2]",  # 6: not an object
    TOO_WIDE,  # 7: over this server's MAX_WIDTH: fails in the engine
]


@pytest.fixture(scope="module")
def shared_service() -> Iterator[Service]:
    service = make_service()
    yield service
    service.stop()


class Recorder:
    """Wraps a map function: records what was sent and checks each image is on disk at once."""

    def __init__(self, service: Service, output_dir: Path) -> None:
        self.inner = service_map(service)
        self.output_dir = output_dir
        self.sent: list[dict[str, Any]] = []

    def __call__(self, requests: list[dict[str, Any]]) -> Iterator[Any]:
        self.sent.extend(requests)
        for position, outcome in self.inner(requests):
            yield position, outcome
            # The job has handled this outcome before asking for the next one.
            if isinstance(outcome, dict):
                entry = _manifest_log(self.output_dir)[-1]
                assert entry["status"] == "ok"
                assert all((self.output_dir / name).is_file() for name in entry["outputs"])


def _manifest_log(output_dir: Path) -> list[dict[str, Any]]:
    text = (output_dir / MANIFEST_NAME).read_text()
    return [json.loads(line) for line in text.splitlines()]


def _by_line(output_dir: Path) -> dict[int, dict[str, Any]]:
    return {entry["line"]: entry for entry in _manifest_log(output_dir)}


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_good_and_bad_lines_then_a_rerun_skips_finished_work(
    tmp_path: Path, shared_service: Service
) -> None:
    source = _write(tmp_path / "requests.jsonl", LINES)
    out = tmp_path / "out"
    first = Recorder(shared_service, out)
    summary = run_batch(source, out, first, progress=False)
    assert (summary.total, summary.done, summary.skipped, summary.failed) == (6, 2, 0, 4)
    assert len(first.sent) == 3  # bad lines never reach the model

    manifest = _by_line(out)
    assert sorted(manifest) == [1, 2, 3, 4, 6, 7]  # one record per line, blank line ignored
    seeded, seedless = manifest[1], manifest[2]
    assert seeded["status"] == "ok" and seeded["seed"] == 11 and seeded["error"] is None
    assert len(seedless["outputs"]) == 2 and isinstance(seedless["seed"], int)
    assert seedless["request"]["seed"] == seedless["seed"]  # the drawn seed is recorded
    for entry in (seeded, seedless):
        for name in entry["outputs"]:
            assert decode((out / name).read_bytes()).shape == (64, 64, 3)
    # The batch image is byte-identical to a direct service call with the same request.
    direct = shared_service.generate(GenerateRequest.model_validate(json.loads(GOOD_SEEDED)))
    assert (out / seeded["outputs"][0]).read_bytes() == direct.images[0].data

    assert manifest[3]["error"]["type"] == "invalid_json"
    assert manifest[3]["error"]["message"].startswith("line 3: invalid JSON")
    assert manifest[4]["error"]["field"] == "steps"
    assert manifest[4]["error"]["message"].startswith("line 4: steps")
    assert "500" in manifest[4]["error"]["message"]
    assert "line 6: expected a JSON object" in manifest[6]["error"]["message"]
    assert manifest[7]["status"] == "failed"
    assert "line 7" in manifest[7]["error"]["message"]
    assert "MAX_WIDTH" in manifest[7]["error"]["message"]
    assert manifest[7]["error"]["type"] == "invalid_request"

    # Re-run: finished requests are skipped; only the one the engine refused is sent again.
    again = Recorder(shared_service, out)
    summary = run_batch(source, out, again, progress=False)
    assert (summary.done, summary.skipped, summary.failed) == (0, 2, 4)
    assert [r["prompt"] for r in again.sent] == ["wide"]
    rerun = _by_line(out)
    assert rerun[2]["status"] == "skipped" and rerun[2]["seed"] == seedless["seed"]
    assert rerun[2]["outputs"] == seedless["outputs"]

    # A lost image is regenerated with the seed fixed on the first run: the same bytes.
    lost = out / seedless["outputs"][1]
    original = lost.read_bytes()
    lost.unlink()
    third = Recorder(shared_service, out)
    summary = run_batch(source, out, third, progress=False)
    assert summary.done == 1
    assert any(r.get("seed") == seedless["seed"] for r in third.sent)
    assert lost.read_bytes() == original


def test_requests_are_identified_by_content_not_line_number(
    tmp_path: Path, shared_service: Service
) -> None:
    out = tmp_path / "out"
    run_batch(_write(tmp_path / "a.jsonl", [GOOD_SEEDED]), out, service_map(shared_service))
    # The same request moved to line 3, with explicit defaults and keys in another order.
    moved = json.dumps({**SMALL, "num_outputs": 1, "seed": 11, "prompt": "a red fox"})
    recorder = Recorder(shared_service, out)
    summary = run_batch(
        _write(tmp_path / "b.jsonl", [GOOD_SEEDLESS, "", moved]), out, recorder, progress=False
    )
    assert (summary.skipped, summary.done) == (1, 1)
    assert [r["prompt"] for r in recorder.sent] == ["a blue whale"]


def test_identical_seedless_lines_are_distinct_images(tmp_path: Path) -> None:
    items = read_items(_write(tmp_path / "p.txt", ["a cat", "a cat", "a dog"]))
    assert [item.request.prompt for item in items if item.request] == ["a cat", "a cat", "a dog"]
    assert len({item.key for item in items}) == 3


def test_plain_text_prompts_and_format_sniffing(tmp_path: Path, shared_service: Service) -> None:
    prompts = _write(tmp_path / "prompts", ["a lighthouse at dusk", "", "  a quiet harbour  "])
    out = tmp_path / "out"
    summary = run_batch(prompts, out, service_map(shared_service), progress=False)
    assert (summary.done, summary.failed) == (2, 0)
    manifest = _by_line(out)
    assert manifest[3]["request"]["prompt"] == "a quiet harbour"
    assert manifest[1]["outputs"][0].startswith("a-lighthouse-at-dusk-")
    # A .jsonl suffix means JSON even when a line does not look like it.
    items = read_items(_write(tmp_path / "x.jsonl", ["a prompt"]))
    assert items[0].error is not None and items[0].error["type"] == "invalid_json"


def test_an_interrupted_job_keeps_what_it_finished(tmp_path: Path, shared_service: Service) -> None:
    source = _write(tmp_path / "r.jsonl", [GOOD_SEEDED, GOOD_SEEDLESS])
    out = tmp_path / "out"

    def interrupted(requests: list[dict[str, Any]]) -> Iterator[Any]:
        yield 0, shared_service.generate(requests[0]).model_dump()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(source, out, interrupted, progress=False)
    # The unfinished line is kept as pending, with the seed drawn for it.
    assert [e["status"] for e in _manifest_log(out)] == ["ok", "pending"]
    drawn = _by_line(out)[2]["seed"]
    assert isinstance(drawn, int)
    recorder = Recorder(shared_service, out)
    summary = run_batch(source, out, recorder, progress=False)
    assert (summary.skipped, summary.done) == (1, 1)
    assert [(r["prompt"], r["seed"]) for r in recorder.sent] == [("a blue whale", drawn)]


def test_map_failures_are_recorded_per_line_without_stopping(tmp_path: Path) -> None:
    source = _write(tmp_path / "r.jsonl", [GOOD_SEEDED, GOOD_SEEDLESS, TOO_WIDE])

    def flaky(requests: list[dict[str, Any]]) -> Iterator[Any]:
        yield 2, ModelError("the model failed on this request; the server log has the details")
        yield 0, RuntimeError("container preempted")
        # position 1 never comes back

    summary = run_batch(source, tmp_path / "out", flaky, progress=False)
    assert (summary.done, summary.failed) == (0, 3)
    errors = {line: e["error"] for line, e in _by_line(tmp_path / "out").items()}
    assert errors[3]["type"] == "model_error" and errors[3]["message"].startswith("line 3: ")
    assert errors[1] == {"type": "RuntimeError", "message": "line 1: container preempted"}
    assert errors[2]["type"] == "missing_result"


def test_a_dict_request_names_the_problem(shared_service: Service) -> None:
    with pytest.raises(ValueError, match="must be a dict"):
        shared_service.generate(["a fox"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_outputs"):
        shared_service.generate({"num_outputs": 9})


def test_cli_runs_the_same_job_locally(tmp_path: Path) -> None:
    source = _write(tmp_path / "r.jsonl", [GOOD_SEEDED, json.dumps({"steps": 500})])
    out = tmp_path / "out"
    command = [sys.executable, "-m", "inference", "batch", str(source), "--output-dir", str(out)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr  # one line failed: the job finished, and says so
    assert "2 requests: 1 generated, 0 already done, 1 failed" in proc.stdout
    assert "ready" in proc.stderr  # the engine's log line when the model has loaded
    assert [e["status"] for e in _manifest_log(out)] == ["ok", "failed"]
    again = subprocess.run([*command, "-q"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "1 generated" not in again.stdout and "1 already done" in again.stdout
    assert "ready" not in again.stderr  # nothing left to run: the model was never loaded
    missing = subprocess.run(
        [*command[:4], str(tmp_path / "nope.jsonl")], cwd=ROOT, capture_output=True, text=True
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_image_paths_are_read_relative_to_the_job_file_and_never_outside_it(
    tmp_path: Path, shared_service: Service
) -> None:
    from tests.test_img2img import photo, png

    folder = tmp_path / "job"
    (folder / "inputs").mkdir(parents=True)
    (folder / "inputs" / "photo.png").write_bytes(png(photo()))
    (tmp_path / "private.png").write_bytes(png(photo(seed=1)))
    (folder / "inputs" / "link.png").symlink_to(tmp_path / "private.png")
    image_line = {"prompt": "a fox", "seed": 3, "steps": 4, "strength": 0.6}
    lines = [
        json.dumps({**image_line, "image": "inputs/photo.png"}),  # 1: inside: fine
        json.dumps({**image_line, "image": "../private.png"}),  # 2: climbs out
        json.dumps({**image_line, "image": str(tmp_path / "private.png")}),  # 3: absolute
        json.dumps({**image_line, "image": "inputs/link.png"}),  # 4: a link that leads out
        json.dumps({**image_line, "image": "inputs/missing.png"}),  # 5
        json.dumps({**image_line, "image": "inputs"}),  # 6: a folder
    ]
    source = _write(folder / "requests.jsonl", lines)
    out = tmp_path / "out"
    summary = run_batch(source, out, service_map(shared_service), progress=False)
    assert (summary.done, summary.failed) == (1, 5)
    manifest = _by_line(out)
    ok = manifest[1]
    assert ok["status"] == "ok" and ok["request"]["image"] == "inputs/photo.png"  # not base64
    direct = shared_service.generate({**image_line, "image": png(photo())})
    assert (out / ok["outputs"][0]).read_bytes() == direct.images[0].data
    for line in (2, 3, 4):
        error = manifest[line]["error"]
        assert error["field"] == "image", error
        assert "is outside the job file's folder" in error["message"], error
    assert "there is no file 'inputs/missing.png'" in manifest[5]["error"]["message"]
    assert "cannot read 'inputs'" in manifest[6]["error"]["message"]
    # Re-run: the key is the image's content, so the finished line is skipped...
    again = run_batch(source, out, service_map(shared_service), progress=False)
    assert again.skipped == 1
    # ...until the file changes.
    (folder / "inputs" / "photo.png").write_bytes(png(photo(seed=2)))
    changed = run_batch(source, out, service_map(shared_service), progress=False)
    assert (changed.done, changed.skipped) == (1, 0)
