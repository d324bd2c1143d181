"""Adapter files and a local file server for the LoRA tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch
from safetensors.torch import save_file


def mock_adapter(
    path: Path, gamma: float | None = None, beta: float | None = None, pad_bytes: int = 0
) -> Path:
    """A mock adapter (``inference.models.mock``): deltas for gamma and/or beta; ``pad_bytes``
    of metadata make it larger."""
    tensors = {}
    if gamma is not None:
        tensors["lora.gamma"] = torch.tensor(gamma, dtype=torch.float64)
    if beta is not None:
        tensors["lora.beta"] = torch.tensor(beta, dtype=torch.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"pad": "x" * pad_bytes} if pad_bytes else None)
    return path


class Handler(SimpleHTTPRequestHandler):
    """Serves a folder; counts GETs by path; ``/redirect`` answers 302; a name too long for
    any file system (over 255 bytes) serves ``a.safetensors``."""

    hits: dict[str, int]

    def do_GET(self) -> None:
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        if self.path == "/redirect.safetensors":
            self.send_response(302)
            self.send_header("Location", "/a.safetensors")
            self.end_headers()
            return
        if len(self.path.rsplit("/", 1)[-1].encode()) > 255:
            self.path = "/a.safetensors"
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def file_server(folder: Path) -> Iterator[tuple[str, dict[str, int]]]:
    """An HTTP server for ``folder`` on 127.0.0.1: its base URL and its hit counts."""
    hits: dict[str, int] = {}
    handler = type("CountingHandler", (Handler,), {"hits": hits})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()
