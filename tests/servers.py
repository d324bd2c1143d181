"""Start real servers as subprocesses on 127.0.0.1 for tests, and stop them cleanly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    url: str, process: subprocess.Popen, timeout_s: float = 60, status: int = 200
) -> None:
    """Poll ``url`` until it answers ``status``; fail with the server's output if it dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{output(process)}")
        try:
            if httpx.get(url, timeout=2).status_code == status:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer {status} within {timeout_s}s")


@contextmanager
def running(command: Sequence[str], **options: Any) -> Iterator[str]:
    """Run ``command`` (which must listen on ``options["port"]``) and yield its base URL."""
    with server_process(command, **options) as (url, _):
        yield url


@contextmanager
def server_process(
    command: Sequence[str],
    *,
    port: int,
    env: Mapping[str, str] | None = None,
    cwd: Path = ROOT,
    ready_path: str = "/health",
    timeout_s: float = 60,
    clean_env: bool = False,
) -> Iterator[tuple[str, subprocess.Popen[Any]]]:
    """Like ``running``, also yielding the process (to signal it, read its ``output``, its
    RSS); stopped at the end if the test has not stopped it.

    Its output goes to a file, not a pipe: nobody reads a pipe while the test runs, and a
    server that fills one (64 KiB of access log: a fuzzer's run) blocks on its next log line.
    """
    base_env = {} if clean_env else dict(os.environ)
    full_env = {**base_env, "PYTHONUNBUFFERED": "1", **(env or {})}
    with tempfile.TemporaryDirectory(prefix="server-") as folder:
        log = Path(folder) / "output.log"
        with log.open("w") as sink:
            process = subprocess.Popen(
                list(command), cwd=cwd, env=full_env, stdout=sink, stderr=subprocess.STDOUT
            )
        _LOGS[process.pid] = log
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(url + ready_path, process, timeout_s)
            yield url, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            del _LOGS[process.pid]


#: Where each running test server's output goes, by process id.
_LOGS: dict[int, Path] = {}


def output(process: subprocess.Popen[Any]) -> str:
    """Everything a server from ``server_process`` has printed so far."""
    return _LOGS[process.pid].read_text(errors="replace")


def stopped_output(process: subprocess.Popen[Any], timeout_s: float) -> str:
    """Wait up to ``timeout_s`` for the server to exit; everything it printed."""
    process.wait(timeout=timeout_s)
    return output(process)


@contextmanager
def inference_server(
    env: Mapping[str, str] | None = None, port: int | None = None
) -> Iterator[str]:
    """``python -m inference serve`` on a free port, waited on until /ready answers 200."""
    port = port or free_port()
    command = [sys.executable, "-m", "inference", "serve", "--port", str(port)]
    with running(command, port=port, env=env, ready_path="/ready") as url:
        yield url


@contextmanager
def inference_process(
    env: Mapping[str, str] | None = None,
) -> Iterator[tuple[str, subprocess.Popen[Any]]]:
    """``python -m inference serve`` as a process the test may signal, once /ready is 200."""
    port = free_port()
    command = [sys.executable, "-m", "inference", "serve", "--port", str(port)]
    with server_process(command, port=port, env=env, ready_path="/ready") as started:
        yield started


@contextmanager
def serving_in_thread(app: object) -> Iterator[str]:
    """A real uvicorn server on 127.0.0.1 in this process, for apps around a test's engine."""
    import threading

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
