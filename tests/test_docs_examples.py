"""Every shell and Python example of README.md and docs/ runs, against a real server.

The blocks marked ``<!-- run -->`` run in page order, in one working folder per page (so a file
one block writes is there for the next), against ``python -m inference serve`` with the mock
model on a free port that replaces ``localhost:8000``. ``curl`` fails on an HTTP error status, so
an example that gets a 4xx fails here. The blocks that are not run are listed in ``NOT_RUN`` with
the reason; a new unmarked example fails ``test_every_example_is_run_or_excused``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.docs_examples import EXAMPLES, ROOT, Block, blocks, pages
from tests.lora_files import mock_adapter
from tests.servers import free_port, inference_server, server_process

#: Seconds one block may take (the tiny diffusers pipeline's first load is the slowest).
BLOCK_TIMEOUT_S = 180

#: (page, first line of the block) -> why it is not run. Only what needs a cloud account, a
#: download from the Hugging Face Hub, Docker, an install, or minutes of benchmarks.
NOT_RUN: dict[tuple[str, str], str] = {
    (
        "docs/fleet.md",
        "MODELS_FILE=examples/models.toml make serve",
    ): "installs into .venv (make serve); tests/test_fleet.py serves examples/models.toml and "
    "sends these requests, the admin re-weighting included",
    (
        "README.md",
        "make serve   # installs into .venv, then serves the mock model (API, and UI at /ui) on :8000",  # noqa: E501
    ): "installs into .venv (make serve is the server these tests start; make test runs them)",
    (
        "README.md",
        "pip install -e '.[modal]' && modal setup",
    ): "installs the modal client and deploys to Modal's servers (cloud account)",
    (
        "README.md",
        'cog predict -i prompt="a red fox" -i seed=42',
    ): "needs Docker (cog builds an image) and pushes to Replicate (cloud account)",
    (
        "README.md",
        "hf repos create <you>/diffusion-serve --type space --space-sdk docker",
    ): "creates and pushes to a Hugging Face Space (cloud account)",
    (
        "docs/batch.md",
        "modal run deploy.py::batch --input prompts.jsonl --output-dir out/   # on Modal GPUs",
    ): "runs on Modal's servers (cloud account)",
    (
        "docs/benchmarks.md",
        "make bench                                   # everything: 10-30 minutes on 2 CPU cores",
    ): "benchmarks run for minutes; the shortest, --quick, about one (tests/test_bench.py runs it)",
    (
        "docs/benchmarks.md",
        "make bench-accel                                        # ~10 min on 2 cores: results/accel.md",  # noqa: E501
    ): "benchmarks run for minutes (about 8 on 2 cores; tools/gpu_bench.sh needs a CUDA GPU)",
    (
        "docs/byom.md",
        "MODEL=examples.watermarked:WatermarkedModel WEIGHTS_PATH=stabilityai/sd-turbo python -m inference serve",  # noqa: E501
    ): "downloads weights from the Hugging Face Hub",
    (
        "docs/deploy/cog.md",
        "cog predict -i seed=42 -i prompt_weight=0.7              # builds the image, saves the image here",  # noqa: E501
    ): "needs Docker (cog builds an image) and pushes to Replicate (cloud account)",
    (
        "docs/deploy/cog.md",
        "import replicate  # pip install replicate; export REPLICATE_API_TOKEN=...",
    ): "calls a model on Replicate's servers (cloud account)",
    (
        "docs/deploy/cog.md",
        "curl -s -X POST https://api.replicate.com/v1/predictions \\",
    ): "calls a model on Replicate's servers (cloud account)",
    (
        "docs/deploy/cog.md",
        ".venv/bin/pip install -e '.[cog]'",
    ): "installs the cog extra into .venv, writes .cog/ in the checkout (test_cog.py runs it)",
    (
        "docs/deploy/modal.md",
        "pip install -e '.[modal]'   # the project plus the modal client (add --extra-index-url",
    ): "installs the modal client and deploys to Modal's servers (cloud account)",
    (
        "docs/deploy/modal.md",
        "URL=https://<workspace>--diffusion-serve-model-web.modal.run",
    ): "calls an app deployed on Modal (cloud account)",
    (
        "docs/deploy/modal.md",
        "modal run deploy.py::download --model stabilityai/sd-turbo --revision <commit>",
    ): "downloads weights on Modal's servers and deploys there (cloud account)",
    ("docs/deploy/modal.md", "import modal"): "calls an app deployed on Modal (cloud account)",
    (
        "docs/deploy/space.md",
        "pip install -U huggingface_hub",
    ): "installs huggingface_hub and pushes to a Hugging Face Space (cloud account)",
    (
        "docs/deploy/space.md",
        "hf upload <you>/diffusion-serve . --repo-type space \\",
    ): "uploads to a Hugging Face Space (cloud account)",
    (
        "docs/deploy/space.md",
        "from huggingface_hub import HfApi, Volume",
    ): "configures a Hugging Face Space's volumes (cloud account)",
    (
        "docs/deploy/space.md",
        "SPACE=https://<you>-diffusion-serve.hf.space",
    ): "calls a deployed Hugging Face Space (cloud account)",
    (
        "docs/development.md",
        "make test                          # lint + tests (offline)",
    ): "installs into .venv and runs the whole suite, this test included",
    (
        "docs/getting-started.md",
        "make serve   # installs into .venv, then serves the mock model (API, and UI at /ui) on :8000",  # noqa: E501
    ): "installs into .venv (make serve is the server these tests start; make test runs them)",
    (
        "docs/getting-started.md",
        "python -m inference download stabilityai/sd-turbo --revision <commit>   # weights, safetensors only",  # noqa: E501
    ): "downloads weights from the Hugging Face Hub",
    (
        "docs/getting-started.md",
        "python -m tools.bench            # throughput/latency against peers (see Benchmarks)",
    ): "benchmarks run for minutes (10-30 on 2 CPU cores)",
    (
        "docs/models.md",
        "pip install -e '.[diffusers]'",
    ): "installs the diffusers extra and downloads weights from the Hugging Face Hub",
}


def all_blocks() -> list[Block]:
    return [block for page in pages() for block in blocks(page)]


def runnable_pages() -> list[str]:
    return sorted({b.page for b in all_blocks() if b.marker})


def test_every_example_is_run_or_excused() -> None:
    unmarked = {
        (b.page, b.first_line): b.line
        for b in all_blocks()
        if b.language in EXAMPLES and not b.marker
    }
    missing = sorted(
        f"{page}:{line}: {first!r}"
        for (page, first), line in unmarked.items()
        if (page, first) not in NOT_RUN
    )
    stale = sorted(f"{page}: {first!r}" for page, first in NOT_RUN if (page, first) not in unmarked)
    assert not missing, "examples neither run nor excused (mark them <!-- run -->):\n" + "\n".join(
        missing
    )
    assert not stale, "NOT_RUN names blocks that are gone or now run:\n" + "\n".join(stale)


def test_marked_blocks_are_examples() -> None:
    wrong = [f"{b.page}:{b.line}" for b in all_blocks() if b.marker and b.language not in EXAMPLES]
    assert not wrong, f"only bash and python blocks can be run: {wrong}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    loras = tmp_path_factory.mktemp("server-loras")
    mock_adapter(loras / "style.safetensors", gamma=0.05)
    port = free_port()
    with inference_server(env={"LORA_DIR": str(loras)}, port=port) as url:
        yield url, port


def fixtures(folder: Path) -> None:
    """The files the examples name: a photo (PNG and JPEG), a mask of its size, an adapter."""
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    photo.save(folder / "photo.png")
    photo.save(folder / "photo.jpg")
    mask = np.zeros((256, 256), dtype=np.uint8)
    mask[64:192, 64:192] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    mock_adapter(folder / "loras" / "style.safetensors", gamma=0.05)


def environment(folder: Path) -> dict[str, str]:
    """The venv's python first on PATH, and a curl that fails on an HTTP error."""
    bin_dir = folder / ".bin"
    bin_dir.mkdir()
    curl = bin_dir / "curl"
    curl.write_text(f'#!/bin/sh\nexec {shutil.which("curl")} --fail-with-body "$@"\n')
    curl.chmod(0o755)
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]])
    return {
        **os.environ,
        "PATH": path,
        "PYTHONPATH": str(ROOT),
        "AUTH_TOKEN": "any-token-auth-is-off",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.mark.parametrize("page", runnable_pages())
def test_examples_run(page: str, server: tuple[str, int], tmp_path: Path) -> None:
    _, port = server
    fixtures(tmp_path)
    env = environment(tmp_path)
    for block in blocks(ROOT / page):
        if block.marker == "file":
            (tmp_path / block.arg).write_text(block.code)
        elif block.marker == "server":
            serve(block, tmp_path, env)
        elif block.marker == "run":
            run(block, port, tmp_path, env)


def run(block: Block, port: int, folder: Path, env: dict[str, str]) -> None:
    """Run one example to its end against the test server; it must exit 0."""
    code = block.code.replace("localhost:8000", f"127.0.0.1:{port}")
    if block.language == "bash":
        command = ["bash", "-euo", "pipefail", "-c", code]
    else:
        script = folder / f"example_{block.line}.py"
        script.write_text(code)
        command = [sys.executable, str(script)]
    done = subprocess.run(
        command,
        cwd=ROOT if block.arg == "checkout" else folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
    )
    assert done.returncode == 0, (
        f"{block.page}:{block.line}: the example failed ({done.returncode}):\n{code}\n"
        f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    )


def serve(block: Block, folder: Path, env: dict[str, str]) -> None:
    """Start a server example on a free port instead of 8000, wait for 200 at its readiness
    path, then stop it: it must come up as written, without auth like the test's own server."""
    port = free_port()
    code = re.sub(r"\b8000\b", str(port), block.code)
    assert code != block.code, f"{block.page}:{block.line}: a server example must use port 8000"
    without_auth = {name: value for name, value in env.items() if name != "AUTH_TOKEN"}
    command = ["bash", "-euo", "pipefail", "-c", code]
    with server_process(
        command,
        port=port,
        env=without_auth,
        cwd=folder,
        ready_path=block.arg,
        timeout_s=BLOCK_TIMEOUT_S,
        clean_env=True,
    ):
        pass
