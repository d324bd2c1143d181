"""The servers under test as subprocesses: commands, environment, start-up and a clean stop."""

from __future__ import annotations

import functools
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from tools.bench.data import Workload

ROOT = Path(__file__).resolve().parents[2]
PEERS_DIR = Path(__file__).resolve().parent / "peers"
ALL_SERVERS = ("ours", "ours-wait0", "naive", "litserve")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_start": round(os.getloadavg()[0], 2),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    # Numbers belong to code: the commit and the versions that decide the hot paths.
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    info["commit"] = commit.stdout.strip() or "unknown"
    info["versions"] = {
        name: _version(name) for name in ("torch", "diffusers", "fastapi", "uvicorn", "litserve")
    }
    return info


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def server_env(workload: Workload, extra: dict[str, str], root: Path = ROOT) -> dict[str, str]:
    """This process's environment for a server, minus every setting it would otherwise inherit;
    ``root``: the checkout whose code it serves (another one measures code before a change)."""
    setting_names = _setting_names()
    env = {k: v for k, v in os.environ.items() if k.upper() not in setting_names}
    pythonpath = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    return {
        **env,
        "PYTHONPATH": pythonpath,
        "PYTHONUNBUFFERED": "1",
        "MODEL": workload.model,
        "LOG_LEVEL": "warning",
        "UI": "false",  # the peers serve no UI; Gradio's import would only blur cold start
        **dict(workload.env),
        **extra,
    }


@functools.cache
def _setting_names() -> frozenset[str]:
    from inference.settings import env_names

    return env_names()


def fetch(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 5.0) -> Any:
    """One HTTP call; httpx is imported here so that importing the CLI stays light."""
    import httpx

    return httpx.request(method, url, json=body, timeout=timeout)


def start_server(
    command: list[str], env: dict[str, str], log: TextIO, root: Path = ROOT
) -> subprocess.Popen[Any]:
    """Start a server from the repository root (``python -m`` imports from there first), its
    output to ``log``."""
    return subprocess.Popen(
        command,
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: see stop_process_group
    )


@contextmanager
def server_process(
    name: str,
    command: list[str],
    env: dict[str, str],
    port: int,
    ready_path: str,
    log_dir: Path,
    root: Path = ROOT,
) -> Iterator[tuple[str, int]]:
    """Run a server subprocess (from checkout ``root``) until ``ready_path`` answers 200; its
    output goes to a log file.

    Yields its URL and pid, which is also its process group's id (for ``wrk.group_cpu_s``).
    """
    import httpx

    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        process = start_server(command, env, log, root)
        try:
            deadline = time.monotonic() + 300
            while True:
                if process.poll() is not None:
                    tail = log_path.read_text()[-2000:]
                    raise RuntimeError(
                        f"server {name!r} exited with {process.returncode} before it was ready; "
                        f"its log ({log_path}) ends with:\n{tail}"
                    )
                try:
                    if fetch("GET", url + ready_path, timeout=2).status_code == 200:
                        break
                except httpx.TransportError:  # not listening yet
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"server {name!r} was not ready within 300 s; see {log_path}"
                    )
                time.sleep(0.1)
            yield url, process.pid
        finally:
            stop_process_group(process)


def stop_process_group(process: subprocess.Popen[Any]) -> None:
    """SIGTERM the server's whole process group, SIGKILL what is left after 2 s.

    LitServe runs its API server and inference workers as child processes that outlive a
    SIGTERM to the parent (after serving a load, its group has not exited 20 s later); left
    running they would eat the CPU of every later measurement. The servers are idle when they
    are stopped (ours exits within half a second), so 2 s is long enough for a clean exit.
    """
    for sig, wait_s in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            process.poll()
            try:
                os.killpg(process.pid, 0)  # does anyone in the group remain?
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            continue
        break
    process.wait()


def server_command(
    name: str, port: int, max_batch_size: int, max_wait_ms: float
) -> tuple[list[str], dict[str, str], str]:
    """(command, extra env, readiness path) of each server under test."""
    py = sys.executable
    # Every request is the same seeded one: the result cache would answer it without the model.
    batching = {
        "MAX_BATCH_SIZE": str(max_batch_size),
        "MAX_QUEUE_SIZE": "4096",
        "RESULT_CACHE_MB": "0",
    }
    if name == "ours":
        cmd = [py, "-m", "inference", "serve", "--port", str(port)]
        return cmd, {**batching, "MAX_WAIT_MS": f"{max_wait_ms:g}"}, "/ready"
    if name == "ours-wait0":
        cmd = [py, "-m", "inference", "serve", "--port", str(port)]
        return cmd, {**batching, "MAX_WAIT_MS": "0"}, "/ready"
    if name == "naive":
        return [py, str(PEERS_DIR / "naive_server.py"), "--port", str(port)], {}, "/health"
    if name == "litserve":
        cmd = [
            py,
            str(PEERS_DIR / "litserve_server.py"),
            "--port",
            str(port),
            "--max-batch-size",
            str(max_batch_size),
            "--batch-timeout-ms",
            f"{max_wait_ms:g}",
        ]
        return cmd, {}, "/health"
    raise ValueError(f"unknown server {name!r}; choose from {', '.join(ALL_SERVERS)}")
