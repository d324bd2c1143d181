"""A webhook receiver on 127.0.0.1 for tests: records every delivery, and can misbehave.

Each request takes the next planned behaviour (``ok`` by default): ``500`` answers 500,
``hang`` answers nothing for ``hang_s`` or until ``release`` is set, ``reset`` closes the
connection with a TCP reset.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    at: float
    answered: str

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    plan: list[str] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    hang_s: float = 2.0
    #: Ends every hang at once: a test can keep a receiver hanging for as long as it checks.
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answered(self, behaviour: str = "ok") -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.answered == behaviour]

    def wait_for(self, count: int, timeout_s: float = 15, behaviour: str = "ok") -> list[Delivery]:
        """The first ``count`` deliveries answered ``behaviour``, waiting for them."""
        deadline = time.monotonic() + timeout_s
        while len(got := self.answered(behaviour)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(got)} of {count} webhooks arrived: {got}")
            time.sleep(0.02)
        return got


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A reset connection is planned here, not a failure."""


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            with receiver.lock:
                behaviour = receiver.plan.pop(0) if receiver.plan else "ok"
                receiver.deliveries.append(
                    Delivery(
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        time.monotonic(),
                        behaviour,
                    )
                )
            if behaviour == "hang":
                receiver.release.wait(receiver.hang_s)
                return
            if behaviour == "reset":
                linger = struct.pack("ii", 1, 0)
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                self.connection.close()
                return
            self.send_response(500 if behaviour == "500" else 200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = _Quiet(("127.0.0.1", 0), Handler)
    receiver = Receiver(f"http://127.0.0.1:{server.server_port}/hook")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
