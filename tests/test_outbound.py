"""Every outbound transfer goes through the one guard (``inference.net``), proven per caller.

The four callers (image URLs, LoRA URLs, Cog's trained weights, webhooks) against real HTTP
servers on 127.0.0.1: a name that rebinds to 127.0.0.1 after its check never reaches it; a
slow adapter host never holds up the model's worker; a truncated download is never kept; a
slow webhook receiver never delays another's deliveries; and their settings read host lists and
old names alike.
"""

from __future__ import annotations

import json
import logging
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from inference.errors import InvalidRequest
from inference.fetch import fetch_image
from inference.hosts import HostList
from inference.lora.sources import AdapterSources
from inference.lora.trained import trained_weights
from inference.predictions.record import Prediction
from inference.predictions.webhooks import WebhookSender
from inference.settings import RENAMED, Settings, env_names
from tests.servers import inference_server

PUBLIC = "93.184.216.34"  # what the rebinding name answers first (a global address)


def safetensors_bytes(values: int = 4) -> bytes:
    """A valid safetensors file of one float32 tensor, written by the format's documentation."""
    header = {"t": {"dtype": "F32", "shape": [values], "data_offsets": [0, 4 * values]}}
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + bytes(4 * values)


class Site:
    """A local HTTP server: ``files`` by path, and per-path behaviours ("drip": one chunk of
    ``drip_bytes`` every ``drip_s``; "truncate": fewer bytes than announced); counts hits."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.behaviour: dict[str, str] = {}
        self.hits: list[str] = []
        self.dripping = threading.Event()
        self.drip_s, self.drip_bytes = 0.2, 64
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                site.hits.append(self.path)
                data = site.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                how = site.behaviour.get(self.path)
                try:
                    if how == "drip":
                        site.dripping.set()
                        for start in range(0, len(data), site.drip_bytes):
                            self.wfile.write(data[start : start + site.drip_bytes])
                            self.wfile.flush()
                            time.sleep(site.drip_s)
                        site.dripping.clear()
                    elif how == "truncate":
                        self.wfile.write(data[: len(data) // 2])
                        self.close_connection = True
                    else:
                        self.wfile.write(data)
                except OSError:
                    site.dripping.clear()  # the client gave up: that is allowed

            def do_POST(self) -> None:
                site.hits.append(self.path)
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]

    @contextmanager
    def running(self) -> Iterator[Site]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def site() -> Iterator[Site]:
    with Site().running() as running:
        running.files = {
            "/fox.png": b"\x89PNG fake",
            "/a.safetensors": safetensors_bytes(),
            "/w.safetensors": safetensors_bytes(),
        }
        yield running


class Rebinding:
    """A DNS server that answers a public address first and 127.0.0.1 afterwards."""

    def __init__(self, first: str = PUBLIC) -> None:
        self.first, self.calls = first, 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        return [self.first] if self.calls == 1 else ["127.0.0.1"]


def _image(url: str, tmp: Path, resolver: Rebinding, private: bool) -> None:
    settings = Settings(
        input_url_hosts="rebind.test", input_url_allow_private=private, input_url_deadline_s=3
    )
    fetch_image(f"{url}/fox.png", "image", settings, resolver)


def _lora(url: str, tmp: Path, resolver: Rebinding, private: bool) -> None:
    settings = Settings(
        lora_allowed_hosts="rebind.test",
        lora_allow_private_urls=private,
        lora_download_dir=tmp,
        lora_url_deadline_s=3,
    )
    AdapterSources(settings, resolver).fetch(f"{url}/a.safetensors")


def _weights(url: str, tmp: Path, resolver: Rebinding, private: bool) -> None:
    settings = Settings(
        lora_download_dir=tmp, lora_allow_private_urls=private, weights_url_deadline_s=3
    )
    trained_weights(f"{url}/w.safetensors", settings, resolver)


def _webhook(url: str, tmp: Path, resolver: Rebinding, private: bool) -> None:
    settings = Settings(
        webhook_allowed_hosts="rebind.test" if private else "",
        webhook_timeout_s=3,
        webhook_max_attempts=2,
        webhook_retry_backoff_s=0,
    )
    sender = WebhookSender(settings, resolver)
    prediction = Prediction(
        id="p1", protocol="replicate", input={}, webhook=f"{url}/hook", status="succeeded"
    )
    sender.send(prediction, ["completed"])
    sender.close(timeout_s=10)


CALLERS: dict[str, Callable[[str, Path, Rebinding, bool], None]] = {
    "image URL": _image,
    "LoRA URL": _lora,
    "trained weights": _weights,
    "webhook": _webhook,
}


@pytest.mark.parametrize("caller", CALLERS)
def test_a_name_that_rebinds_to_loopback_after_its_check_never_reaches_it(
    caller: str, site: Site, tmp_path: Path
) -> None:
    """Issue 21's acceptance test: the lookup that is checked is the one connected to."""
    resolver = Rebinding()
    with suppress(Exception):  # the public address is unreachable, the files are fakes
        CALLERS[caller](f"http://rebind.test:{site.port}", tmp_path, resolver, False)
    assert resolver.calls >= 1  # the name was looked up through the injected resolver
    assert site.hits == []  # ... and 127.0.0.1 never saw a request


@pytest.mark.parametrize("caller", CALLERS)
def test_the_same_name_on_loopback_is_reached_when_private_addresses_are_allowed(
    caller: str, site: Site, tmp_path: Path
) -> None:
    """The control: with the same harness, a name that resolves to 127.0.0.1 from the start
    (and private addresses allowed) does reach the server, so the test above could fail."""
    with suppress(Exception):  # the public address is unreachable, the files are fakes
        CALLERS[caller](f"http://rebind.test:{site.port}", tmp_path, Rebinding("127.0.0.1"), True)
    assert site.hits


# -- downloads: verified before they are kept, off the model's worker -----------------------


def _sources(tmp_path: Path, **settings: Any) -> AdapterSources:
    return AdapterSources(
        Settings(
            lora_allowed_hosts="127.0.0.1",
            lora_allow_private_urls=True,
            lora_download_dir=tmp_path / "downloads",
            **settings,
        )
    )


def test_a_truncated_download_is_not_kept_and_the_next_request_downloads_again(
    site: Site, tmp_path: Path
) -> None:
    sources = _sources(tmp_path)
    url = f"http://127.0.0.1:{site.port}/a.safetensors"
    site.behaviour["/a.safetensors"] = "truncate"
    with pytest.raises(InvalidRequest, match=r"sent \d+ of the \d+ bytes it announced"):
        sources.fetch(url)
    assert not [p for p in (tmp_path / "downloads").rglob("*") if p.is_file()]
    site.behaviour.clear()
    assert sources.fetch(url).read_bytes() == site.files["/a.safetensors"]
    assert site.hits == ["/a.safetensors"] * 2


def test_a_complete_download_that_is_not_whole_safetensors_is_not_kept(
    site: Site, tmp_path: Path
) -> None:
    """No Content-Length to compare against: the file's own header says where it ends."""
    whole = safetensors_bytes(values=64)
    site.files["/cut.safetensors"] = whole[: len(whole) - 100]
    sources = _sources(tmp_path)
    with pytest.raises(InvalidRequest, match="not a safetensors file"):
        sources.fetch(f"http://127.0.0.1:{site.port}/cut.safetensors")
    assert not [p for p in (tmp_path / "downloads").rglob("*") if p.is_file()]


def test_an_adapter_download_has_a_total_deadline(site: Site, tmp_path: Path) -> None:
    site.files["/slow.safetensors"] = safetensors_bytes(values=256)  # ~1 KB at 64 B / 0.2 s
    site.behaviour["/slow.safetensors"] = "drip"
    with pytest.raises(InvalidRequest, match=r"within 0.5s \(LORA_URL_DEADLINE_S\)"):
        _sources(tmp_path, lora_url_deadline_s=0.5).fetch(
            f"http://127.0.0.1:{site.port}/slow.safetensors"
        )


def test_a_slow_adapter_host_never_holds_up_unrelated_requests(site: Site, tmp_path: Path) -> None:
    """Issue 22 item 5: the download runs while its request is validated, not on the engine's
    one worker, so /predict answers and /health-check stays truthful while it drips."""
    from tests.lora_files import mock_adapter

    adapter = mock_adapter(tmp_path / "slow.safetensors", gamma=0.05).read_bytes()
    site.files["/slow.safetensors"] = adapter
    site.behaviour["/slow.safetensors"] = "drip"
    site.drip_s, site.drip_bytes = 0.25, max(1, len(adapter) // 24)  # about 6 s in all
    env = {
        "LORA_ALLOWED_HOSTS": "127.0.0.1",
        "LORA_ALLOW_PRIVATE_URLS": "1",
        "LORA_DOWNLOAD_DIR": str(tmp_path / "downloads"),
        "MAX_WAIT_MS": "0",
    }
    small = {"width": 64, "height": 64, "steps": 2}
    with inference_server(env) as url:
        answers: dict[str, httpx.Response] = {}

        def slow() -> None:
            lora = {"ref": f"http://127.0.0.1:{site.port}/slow.safetensors"}
            body = {**small, "seed": 1, "loras": [lora]}
            answers["slow"] = httpx.post(f"{url}/predict", json=body, timeout=60)

        thread = threading.Thread(target=slow)
        thread.start()
        assert site.dripping.wait(30), "the adapter download never started"
        quick = httpx.post(f"{url}/predict", json={**small, "seed": 2}, timeout=60)
        health = httpx.get(f"{url}/health-check", timeout=30)
        still_dripping = site.dripping.is_set()
        thread.join(60)
    assert quick.status_code == 200 and health.json()["status"] == "READY"
    assert still_dripping, "the unrelated request only answered after the download"
    assert answers["slow"].status_code == 200, answers["slow"].text


# -- webhooks: a slow receiver delays only itself --------------------------------------------


class Holding:
    """A receiver that accepts connections and never answers."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[Any] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_sixteen_hanging_receivers_never_delay_another_receivers_completed_webhook(
    site: Site,
) -> None:
    settings = Settings(webhook_allowed_hosts="127.0.0.1", webhook_timeout_s=20)
    sender = WebhookSender(settings)
    holding = [Holding() for _ in range(16)]
    try:
        for i, receiver in enumerate(holding):
            slow = Prediction(
                id=f"slow{i}",
                protocol="replicate",
                input={},
                webhook=f"http://127.0.0.1:{receiver.port}/hook",
                status="succeeded",
            )
            sender.send(slow, ["completed"])
        deadline = time.monotonic() + 15
        while sum(len(r.accepted) for r in holding) < 16 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert all(r.accepted for r in holding)  # every slow receiver holds a delivery now
        fast = Prediction(
            id="fast",
            protocol="replicate",
            input={},
            webhook=f"http://127.0.0.1:{site.port}/fast",
            status="succeeded",
        )
        sender.send(fast, ["completed"])
        deadline = time.monotonic() + 15  # far below the slow ones' 20 s deadline
        while "/fast" not in site.hits and time.monotonic() < deadline:
            time.sleep(0.02)
        assert site.hits == ["/fast"]
    finally:
        for receiver in holding:
            receiver.close()
        sender.close(timeout_s=1)


# -- settings: one host-list type, new names, old names still read ---------------------------


@pytest.mark.parametrize("name", ["input_url_hosts", "lora_allowed_hosts", "webhook_allowed_hosts"])
def test_every_host_list_setting_is_a_host_list_from_text_or_a_list(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = HostList(["a.example.com", "*.b.example.com"])
    assert getattr(Settings(**{name: ["a.example.com", "*.b.example.com"]}), name) == expected
    monkeypatch.setenv(name.upper(), " A.example.com , *.b.example.com,")
    assert getattr(Settings(), name) == expected


def test_old_names_are_read_with_one_warning_each(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "inference.settings")
    monkeypatch.setenv("IMAGE_URL_HOSTS", "img.example.com")
    monkeypatch.setenv("IMAGE_URL_TIMEOUT_S", "4")
    monkeypatch.setenv("IMAGE_URL_STORE_MB", "7")
    settings = Settings()
    assert settings.input_url_hosts == HostList("img.example.com")
    assert settings.input_url_deadline_s == 4 and settings.image_link_store_mb == 7
    warned = [r.getMessage() for r in caplog.records]
    assert warned == [
        "IMAGE_URL_HOSTS is deprecated: set INPUT_URL_HOSTS instead",
        "IMAGE_URL_STORE_MB is deprecated: set IMAGE_LINK_STORE_MB instead",
        "IMAGE_URL_TIMEOUT_S is deprecated: set INPUT_URL_DEADLINE_S instead",
    ]
    monkeypatch.setenv("INPUT_URL_HOSTS", "new.example.com")  # the new name wins
    assert Settings().input_url_hosts == HostList("new.example.com")


def test_old_names_travel_and_are_cleared_like_the_new_ones() -> None:
    names = env_names()
    assert {"INPUT_URL_HOSTS", "IMAGE_LINK_TTL_S"} <= names
    assert {old.upper() for old in RENAMED} <= names
    assert set(RENAMED.values()) <= set(Settings.model_fields)
