"""A newcomer's first minutes, run as they would run them: real subprocesses, real sockets.

Each mistake a new user makes (an extra not installed, a port already taken, lint in a serve-only
venv) must answer in one line that says what to do, never with a traceback; and once the model
is ready, the log and ``GET /`` say where to go next.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import ROOT, free_port, inference_process, output

INSTALL = re.compile(r"needs the optional '(\w+)' extra: pip install 'diffusion-serve\[\1\]'")


def without(tmp_path: Path, *modules: str) -> dict[str, str]:
    """An environment where importing ``modules`` fails as if their extra were not installed.

    A ``sitecustomize`` puts None in ``sys.modules`` for each: ``import`` then raises
    ModuleNotFoundError and ``importlib.util.find_spec`` answers None, as for a missing package.
    """
    shim = tmp_path / "shim"
    shim.mkdir()
    lines = ["import sys", *(f"sys.modules[{m!r}] = None" for m in modules)]
    (shim / "sitecustomize.py").write_text("\n".join(lines) + "\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), str(ROOT)])}


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )


def assert_one_clear_line(done: subprocess.CompletedProcess[str], *expected: str) -> str:
    """The command failed (1 or 2) with exactly one line on stderr holding ``expected``."""
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert done.returncode in (1, 2), (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for text in expected:
        assert text in lines[0]
    return lines[0]


def test_a_diffusers_model_without_the_extra_is_one_line(tmp_path: Path) -> None:
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    env = without(tmp_path, "diffusers")
    done = run(
        "-m", "inference", "serve", "--model", str(model), "--port", str(free_port()), env=env
    )
    line = assert_one_clear_line(done, str(model))
    assert INSTALL.search(line) and INSTALL.search(line).group(1) == "diffusers", line


def test_tools_check_without_the_tools_extra_is_one_line(tmp_path: Path) -> None:
    done = run("-m", "tools.check", env=without(tmp_path, "dockerfile"))
    line = assert_one_clear_line(done, "python -m tools.check")
    assert INSTALL.search(line) and INSTALL.search(line).group(1) == "tools", line


def test_a_port_in_use_is_one_line_suggesting_another() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run("-m", "inference", "serve", "--port", str(port))
    assert_one_clear_line(done, f"port {port}", "already in use", f"--port {port + 1}")
    assert " ready " not in done.stderr + done.stdout  # no "model 'mock' ready": never loaded


#: What a calling make hands its children: its flags and its command-line variables.
MAKE_VARIABLES = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "CONSTRAIN", "VENV")


def test_make_lint_and_format_install_ruff_first(tmp_path: Path) -> None:
    """In a venv without ruff (what `make serve` makes), the targets install the linters, at the
    lock's pins, before they call them (a dry run: no network, nothing installed)."""
    for target in ("lint", "format"):
        # Not the variables of a make that runs this suite: `make test-latest` empties
        # CONSTRAIN on its command line, which make passes on in MAKEFLAGS and exports.
        env = {k: v for k, v in os.environ.items() if k not in MAKE_VARIABLES}
        done = subprocess.run(
            ["make", "-n", target, f"VENV={tmp_path / 'venv'}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        commands = done.stdout.splitlines()
        install = next(
            i
            for i, c in enumerate(commands)
            if " install -c requirements.lock ruff import-linter" in c
        )
        first_ruff = next(
            i for i, c in enumerate(commands) if c.startswith(f"{tmp_path}/venv/bin/ruff ")
        )
        assert install < first_ruff, done.stdout


@pytest.mark.parametrize("command", [[], ["serve"], ["predict"], ["batch"], ["download"]])
def test_the_cli_help_reads_as_help(command: list[str]) -> None:
    done = run("-m", "inference", *command, "--help")
    assert done.returncode == 0, done.stderr
    for markup in ("``", ":class:", ":func:", "inference.", ".py", "::"):
        assert markup not in done.stdout, f"{markup!r} in --help:\n{done.stdout}"


def test_the_cli_help_shows_examples() -> None:
    done = run("-m", "inference", "--help")
    assert "examples:" in done.stdout
    assert 'python -m inference predict --prompt "a red fox in the snow" -o fox.png' in done.stdout


def wait_for_line(process: subprocess.Popen[str], pattern: str, timeout_s: float = 30) -> str:
    """The first line of the server's output matching ``pattern``, polled for."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        match = re.search(pattern, output(process), re.MULTILINE)
        if match:
            return match.group(0)
        time.sleep(0.1)
    raise AssertionError(f"no line matching {pattern!r} in:\n{output(process)}")


def test_once_ready_the_log_names_the_api_docs_and_ui() -> None:
    with inference_process(env={"UI": "true"}) as (url, process):
        line = wait_for_line(process, r"serving: .*$")
        assert line == f"serving: API {url}/ · docs {url}/docs · web UI {url}/ui/"
        for link in (url + "/", url + "/docs", url + "/ui/"):
            assert httpx.get(link, timeout=30).status_code == 200, link
        root = httpx.get(url + "/", timeout=30).json()
        assert (root["docs"], root["ui"]) == ("/docs", "/ui/")
        log = output(process)
        assert log.index("listening on") < log.index("ready") < log.index("serving:")


def test_without_the_ui_extra_the_log_says_how_to_get_it(tmp_path: Path) -> None:
    env = without(tmp_path, "gradio") | {"UI": "true"}
    with inference_process(env=env) as (url, process):
        line = wait_for_line(process, r"serving: .*$")
        assert line.startswith(f"serving: API {url}/ · docs {url}/docs · the web UI needs")
        assert INSTALL.search(line) and INSTALL.search(line).group(1) == "ui", line
        # GET / still links the UI: there a visitor reads the same instruction.
        ui = httpx.get(url + httpx.get(url + "/").json()["ui"], timeout=30)
        assert ui.status_code == 501 and "diffusion-serve[ui]" in ui.text


def test_an_address_this_machine_lacks_names_the_flags_to_check() -> None:
    from inference.http.server import CannotListen, bind

    with pytest.raises(CannotListen, match=r"cannot listen on 192\.0\.2\.1:\d+: .*--host"):
        bind("192.0.2.1", free_port())  # TEST-NET-1: never a local address
