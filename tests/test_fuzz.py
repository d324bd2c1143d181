"""The API fuzzed against its own OpenAPI document with schemathesis, over real HTTP.

Every generated request (valid and invalid bodies, headers, methods) must get an answer that
conforms to /openapi.json: a documented status, content type and body schema, never a 5xx. The
server runs with tight limits so valid requests are cheap. The default run uses fixed seeds
(a green CI is reproducible); ``-m fuzz`` runs 10,000 cases with fresh seeds.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import inference_server

# MAX_LORAS=0: whether an adapter reference exists (a hub repo, a file) is the world's state,
# which no schema can express; the adapters' own tests cover their 4xx answers.
LIMITS = {
    "MAX_WIDTH": "128",
    "MAX_HEIGHT": "128",
    "MAX_STEPS": "4",
    "MAX_LORAS": "0",
    "UI": "false",
}
TOKEN = "fuzz-token"


def schemathesis(url: str, *args: str) -> tuple[int, str]:
    """Run the schemathesis CLI on the server's document; (test cases passed, output)."""
    command = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert command, "schemathesis is a dev dependency: make install-test"
    done = subprocess.run(
        [command, "run", f"{url}/openapi.json", "--checks", "all", "--no-color", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    found = re.search(r"(\d+) generated, (\d+) passed", output)
    assert found, output[-3000:]
    return int(found.group(2)), output


def test_fuzzed_requests_all_conform_with_and_without_auth() -> None:
    with inference_server(env=LIMITS) as url:
        open_cases, _ = schemathesis(url, "--max-examples", "250", "--seed", "1")
    with inference_server(env={**LIMITS, "AUTH_TOKEN": TOKEN}) as url:
        auth = ("--header", f"Authorization: Bearer {TOKEN}")
        authed_cases, _ = schemathesis(url, "--max-examples", "120", "--seed", "2", *auth)
    assert open_cases + authed_cases >= 1000, (open_cases, authed_cases)


@pytest.mark.fuzz
def test_long_fuzz_with_fresh_seeds() -> None:
    with inference_server(env={**LIMITS, "AUTH_TOKEN": TOKEN}) as url:
        auth = ("--header", f"Authorization: Bearer {TOKEN}")
        cases, output = schemathesis(url, "--max-examples", "3000", *auth)
    assert cases >= 10_000, output[-2000:]
