"""The API fuzzed against its own OpenAPI document with schemathesis, over real HTTP.

Every generated request (valid and invalid bodies, headers, methods) must get an answer that
conforms to /openapi.json: a documented status, content type and body schema, never a 5xx. The
server runs with tight limits so valid requests are cheap. The default run uses fixed seeds
(a green CI is reproducible); ``-m fuzz`` runs 10,000 cases with fresh seeds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz_hooks import WEBHOOK_HOST
from tests.servers import ROOT, inference_server

# MAX_LORAS=0: whether an adapter reference exists (a hub repo, a file) is the world's state,
# which no schema can express; the adapters' own tests cover their 4xx answers.
LIMITS = {
    "MAX_WIDTH": "128",
    "MAX_HEIGHT": "128",
    "MAX_STEPS": "4",
    "MAX_LORAS": "0",
    "UI": "false",
    # Replicate's `Prefer: wait` blocks up to this long; the fuzzer sends it often.
    "PREDICTIONS_WAIT_MAX_S": "1",
    # Predictions run on after their 201/202: a fuzzer's burst must not fill the queue (503 is
    # documented, but the fuzzer counts every 5xx; overload has its own tests).
    "MAX_QUEUE_SIZE": "100000",
    # Schema-valid webhooks are pointed here by tests/fuzz_hooks.py; it never resolves.
    "WEBHOOK_ALLOWED_HOSTS": WEBHOOK_HOST,
    "WEBHOOK_MAX_ATTEMPTS": "1",
}
TOKEN = "fuzz-token"
#: The native API (/, /health, /ready, /metrics, /predict, /predict/batch) and OpenAI's images
#: API (generations, edits, the image links). The predictions routes are documented too
#: (tests/test_conformance.py checks their shapes, tests/test_predictions_*.py drive them with
#: the official clients); fuzzing them passes but takes minutes (``-m fuzz``). A request
#: that hangs fails fast.
SCOPE = ("--include-path-regex", r"^/(predict(/batch)?|health|ready|metrics|v1/images/.+)?$")
#: Every check, plain output, and a request that hangs fails fast.
CHECKS = ("--checks", "all", "--no-color", "--request-timeout", "20")
#: Replicate's and Cog's predictions routes.
PREDICTIONS = ("--include-path-regex", r"^/(v1/predictions|v1/models/|predictions|health-check)")


def schemathesis(
    url: str, cwd: Path, *args: str, scope: tuple[str, ...] = SCOPE, timeout_s: float = 600
) -> tuple[int, str]:
    """Run the schemathesis CLI on the server's document; (test cases passed, output).

    It runs in ``cwd`` (a fresh directory), so no crash cache of an earlier run replays its
    cases: a fixed seed gives the same run every time."""
    command = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert command, "schemathesis is a dev dependency: make install-test"
    done = subprocess.run(
        [command, "run", f"{url}/openapi.json", *CHECKS, *scope, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=cwd,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz_hooks", "PYTHONPATH": str(ROOT)},
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    found = re.search(r"(\d+) generated, (\d+) passed", output)
    assert found, output[-3000:]
    return int(found.group(2)), output


@pytest.mark.timeout(600)
def test_fuzzed_requests_all_conform_with_and_without_auth(tmp_path: Path) -> None:
    with inference_server(env=LIMITS) as url:
        # No stateful phase: its chains of created predictions (and their open event streams)
        # take minutes; the examples, coverage and fuzzing phases cover every operation.
        phases = ("--phases", "examples,coverage,fuzzing")
        open_cases, _ = schemathesis(url, tmp_path, "--max-examples", "100", "--seed", "1", *phases)
    with inference_server(env={**LIMITS, "AUTH_TOKEN": TOKEN}) as url:
        auth = ("--header", f"Authorization: Bearer {TOKEN}")
        # The coverage phase's boundary cases (most of a run) are the open run's, whatever the
        # token; this run's fuzzing phase goes through it, and ignored_auth around it. (A long
        # fuzzing phase reaches a schemathesis bug, hypothesis failing to draw its Binary file
        # parts, "Unsupported type": the seeds here do not.)
        phases = ("--phases", "fuzzing")
        authed_cases, _ = schemathesis(
            url, tmp_path, "--max-examples", "100", "--seed", "2", *phases, *auth
        )
    assert open_cases + authed_cases >= 1000, (open_cases, authed_cases)


@pytest.mark.fuzz
@pytest.mark.timeout(3000)
def test_long_fuzz_with_fresh_seeds(tmp_path: Path) -> None:
    with inference_server(env={**LIMITS, "AUTH_TOKEN": TOKEN}) as url:
        auth = ("--header", f"Authorization: Bearer {TOKEN}")
        cases, output = schemathesis(url, tmp_path, "--max-examples", "3000", *auth, timeout_s=2400)
        # The predictions routes: about a minute for every 50 examples (Prefer: wait, Cog's
        # synchronous creates), so the default run leaves them out.
        phases = ("--phases", "examples,coverage,fuzzing")
        predictions, predictions_output = schemathesis(
            url, tmp_path, "--max-examples", "50", *phases, *auth, scope=PREDICTIONS, timeout_s=400
        )
    assert cases >= 10_000, output[-2000:]
    assert predictions >= 1000, predictions_output[-2000:]
