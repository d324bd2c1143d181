"""The outbound guard (inference/net.py) against a real HTTP server on 127.0.0.1.

A fake resolver plays DNS: the guard is told a test name resolves to 127.0.0.1 (allowed as a
private host) or, for the rebinding test, to a public address for the check and to 127.0.0.1
for every later lookup. The server records every request it receives, so "never connected" is
checked where it matters: on the receiving side.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings

from inference import net
from inference.net import Failed, HostList, Policy, Refused, TooLarge

PUBLIC = "93.184.216.34"
DRIP_INTERVAL_S = 0.2
DEADLINE_S = 1.0
#: A loaded 2-core machine may be slow to start a thread or a handshake; a per-read timeout
#: would take DRIP_BYTES * DRIP_INTERVAL_S = 20 s, far beyond this.
SLACK_S = 4.0
DRIP_BYTES = 100


@dataclass
class Seen:
    method: str
    path: str
    host: str
    body: bytes


@dataclass
class Origin:
    port: int
    seen: list[Seen] = field(default_factory=list)

    def url(self, path: str, name: str = "origin.test", scheme: str = "http") -> str:
        return f"{scheme}://{name}:{self.port}{path}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def _record(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.origin.seen.append(
            Seen(self.command, self.path, self.headers.get("host", ""), body)
        )
        return body

    def _answer(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._record()
        path = self.path
        if path == "/ok":
            self._answer(200, b"hello world")
        elif path == "/redirect":
            self._answer(302, Location=f"http://127.0.0.1:{self.server.origin.port}/ok")
        elif path == "/missing":
            self._answer(404, b"no")
        elif path == "/big":
            self._answer(200, b"x" * 5000)
        elif path == "/big-unannounced":  # no Content-Length: the count must catch it
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"x" * 5000)
            self.close_connection = True
        elif path == "/short":  # promises 100 bytes, sends 40, hangs up
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"y" * 40)
            self.close_connection = True
        elif path == "/drip-body":
            self.send_response(200)
            self.send_header("Content-Length", str(DRIP_BYTES))
            self.end_headers()
            self._drip(b"z" * DRIP_BYTES)
        elif path == "/drip-headers":
            self._drip(b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"s" * DRIP_BYTES)

    def do_POST(self) -> None:
        self._record()
        if self.path == "/hook":
            self._answer(204)
        elif self.path == "/redirect":
            self._answer(307, Location="http://169.254.169.254/latest")
        elif self.path == "/fail":
            self._answer(500, b"x" * 100_000)
        elif self.path == "/drip-headers":
            self._drip(b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"s" * DRIP_BYTES)

    def _drip(self, data: bytes) -> None:
        for byte in data:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(DRIP_INTERVAL_S)
        self.close_connection = True

    def log_message(self, *args: Any) -> None:
        pass


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client the guard cut off mid-drip is the point of the test


def _serve(tls: ssl.SSLContext | None = None) -> Iterator[Origin]:
    server = _Quiet(("127.0.0.1", 0), _Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.origin = Origin(server.server_address[1])  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.origin  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def origin() -> Iterator[Origin]:
    yield from _serve()


class Dns:
    """A fake resolver: ``table`` answers, or a rebinding one that turns to ``then``."""

    def __init__(self, table: dict[str, list[str]], then: list[str] | None = None) -> None:
        self.table, self.then, self.calls = table, then, 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        if self.then is not None and self.calls > 1:
            return self.then
        if host not in self.table:
            raise OSError(f"unknown host {host}")
        return self.table[host]


LOCAL = Dns({"origin.test": ["127.0.0.1"], "good.test": ["127.0.0.1"]})


def local_policy(**changes: Any) -> Policy:
    """Any host, and origin.test / good.test may be local: the test server's names."""
    base: dict[str, Any] = {
        "hosts": HostList("*"),
        "private_hosts": HostList("origin.test, good.test"),
        "deadline_s": DEADLINE_S,
        "max_bytes": 1000,
        "hosts_setting": "IMAGE_URL_HOSTS",
        "private_fix": "set IMAGE_URL_ALLOW_PRIVATE=1 to allow them",
        "deadline_setting": "IMAGE_URL_TIMEOUT_S",
        "size_setting": "MAX_IMAGE_BYTES",
    }
    return Policy(**{**base, **changes})


def post(url: str, body: bytes = b"", headers: dict[str, str] | None = None, **options: Any) -> int:
    """``net.post`` run to completion, with the local policy and resolver unless overridden."""
    options = {"policy": local_policy(), "resolver": LOCAL, **options}
    return asyncio.run(net.post(url, body, headers or {}, **options))


# -- host lists --------------------------------------------------------------------------


def test_a_host_list_reads_a_comma_string_or_a_list_and_matches_as_documented() -> None:
    hosts = HostList(" Images.Example.com., *.cdn.example.org ,, ")
    assert hosts == HostList(["images.example.com", "*.CDN.example.org"])
    assert str(hosts) == "images.example.com, *.cdn.example.org"
    assert hosts.matches("images.example.com")
    assert hosts.matches("a.b.cdn.example.org")
    assert not hosts.matches("cdn.example.org")  # "*.x" is subdomains, not x itself
    assert not hosts.matches("badcdn.example.org")
    assert not hosts.matches("example.com")
    assert HostList("*").matches("anything.net")
    assert not HostList("") and not HostList().matches("a.com")
    assert HostList("[::1], 127.0.0.1, bücher.de").patterns == (
        "::1",
        "127.0.0.1",
        "xn--bcher-kva.de",
    )


@pytest.mark.parametrize("bad", ["a..b", "*.", "a.*.com", "-a.com", "127.1", "x" * 64 + ".com"])
def test_a_bad_host_list_entry_is_named(bad: str) -> None:
    with pytest.raises(ValueError, match=r"host name|neither a host name"):
        HostList(f"ok.com, {bad}")


def test_host_lists_as_pydantic_and_settings_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    class Model(BaseModel):
        hosts: HostList = HostList()

    assert Model(hosts="a.com, *.b.com").hosts == HostList("a.com,*.b.com")
    assert Model(hosts=["a.com"]).hosts == HostList("a.com")
    assert Model.model_validate_json('{"hosts": "a.com"}').hosts == HostList("a.com")
    assert Model(hosts="a.com").model_dump() == {"hosts": "a.com"}
    with pytest.raises(ValidationError, match=r"a..b"):
        Model(hosts="a..b")
    assert "hosts" in Model.model_json_schema()["properties"]

    class Env(BaseSettings):
        webhook_allowed_hosts: HostList = HostList()

    monkeypatch.setenv("WEBHOOK_ALLOWED_HOSTS", "receiver.internal, *.corp")
    assert Env().webhook_allowed_hosts == HostList(["receiver.internal", "*.corp"])


# -- parsing: only the guard's refusal, whatever the input --------------------------------


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://[::1/x", "is not a valid URL"),
        ("http://a.com:99999/x", "port 99999"),
        ("http://a.com:0/x", "port 0"),
        ("http://a..com/x", "empty, over-long"),
        (f"http://{'a' * 64}.com/x", "empty, over-long"),
        ("http://" + ".".join(["a" * 60] * 5) + "/x", "1 to 253 characters"),
        ("http://ab\u00ad\u200d.com/x", "IDNA"),
        ("http://☃.net/", "IDNA"),
        ("http://a\x00b.com/", "control character"),
        ("http://a.com/x\r\nHost: evil", "control character"),
        ("http://user:pw@a.com/x", "credentials"),
        ("ftp://a.com/x", "not an http:// or https:// URL"),
        ("file:///etc/passwd", "not an http:// or https:// URL"),
        ("not a url", "control character"),
        ("http://127.1/", "standard form"),
        ("http://2130706433/", "standard form"),
        ("http://[fe80::1%25eth0]/", "standard form"),
        ("http:///x", "1 to 253 characters"),
        ("https://a.com/" + "x" * 9000, "longer than 8192"),
    ],
)
def test_malformed_urls_are_refused_naming_the_value(url: str, named: str) -> None:
    with pytest.raises(Refused) as info:
        net.parse(url)
    assert named in info.value.message
    assert repr(url)[:40] in info.value.message
    assert len(info.value.message) < 600  # a huge URL makes no huge error


def test_a_good_url_parses_to_ascii_host_port_and_target() -> None:
    got = net.parse("HTTPS://Bücher.DE.:8443/ä b?q=ü#frag".replace(" ", "%20"))
    assert (got.scheme, got.host, got.port) == ("https", "xn--bcher-kva.de", 8443)
    assert got.target == "/%C3%A4%20b?q=%C3%BC" and got.netloc == "xn--bcher-kva.de:8443"
    assert net.parse("http://[::1]/").netloc == "[::1]"


URLISH = st.builds(
    "".join,
    st.tuples(
        st.sampled_from(["http://", "https://", "HTTP://", "ftp://", "http:/", "", "//"]),
        st.sampled_from(["", "u@", "u:p@", "@"]),
        st.one_of(
            st.text(alphabet="ab-_.0123456789[]:%xn", max_size=40),
            st.text(max_size=20),
            st.from_regex(r"\[[0-9a-f:.%]{0,40}\]", fullmatch=True),
            st.sampled_from(["::1", "[::1", "127.0.0.1", "0x7f.1", "b\u00fccher.de", "xn--a"]),
        ),
        st.one_of(st.just(""), st.integers(-5, 70000).map(lambda p: f":{p}"), st.text(max_size=6)),
        st.text(max_size=30),
    ),
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(URLISH, st.text(max_size=80)))
def test_parse_returns_a_checked_url_or_refuses_never_anything_else(url: str) -> None:
    try:
        got = net.parse(url)
    except Refused as exc:
        assert exc.message
        return
    assert got.scheme in ("http", "https") and 0 < got.port < 65536
    assert got.host.isascii() and got.host == got.host.lower() and got.target.startswith("/")
    assert not any(c in got.target for c in " \r\n\x00")


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=60), st.lists(st.text(max_size=20), max_size=4)))
def test_host_lists_accept_or_raise_value_error(value: Any) -> None:
    try:
        hosts = HostList(value)
    except ValueError:
        return
    assert all(p == "*" or p.isascii() for p in hosts.patterns)


# -- addresses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("192.168.0.2", "a private address"),
        ("fd00::1", "a private address"),
        ("169.254.169.254", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("ff0e::1", "a multicast address"),
        ("::7f00:1", "a reserved address"),
        ("100.64.0.1", "a shared (100.64.0.0/10) address"),
        ("::ffff:127.0.0.1", "an IPv4-mapped (127.0.0.1: loopback) address"),
        ("2002:7f00:1::", "a 6to4 (127.0.0.1: loopback) address"),
        ("2002:a9fe:a9fe::1", "a 6to4 (169.254.169.254: link-local) address"),
        ("64:ff9b::7f00:1", "a NAT64 (127.0.0.1: loopback) address"),
        ("64:ff9b::a00:1", "a NAT64 (10.0.0.1: private) address"),
        ("64:ff9b:1::5db8:d822", "a local-use NAT64 address"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "a Teredo address"),
    ],
)
def test_every_non_global_class_is_refused_resolved_or_literal(address: str, reason: str) -> None:
    policy = local_policy(private_hosts=HostList())
    with pytest.raises(Refused) as info:
        net.check("http://name.test/x", policy, Dns({"name.test": [PUBLIC, address]}))
    assert f"resolves to {address}, {reason}" in info.value.message
    assert "IMAGE_URL_ALLOW_PRIVATE" in info.value.message
    literal = f"[{address}]" if ":" in address else address
    with pytest.raises(Refused, match=r"is a|is an"):
        net.check(f"http://{literal}/x", policy, Dns({}))


@pytest.mark.parametrize(
    "address", [PUBLIC, "2606:2800:220:1::1", "2002:5db8:d822::1", "64:ff9b::5db8:d822"]
)
def test_public_addresses_and_their_6to4_and_nat64_forms_pass(address: str) -> None:
    got = net.check(
        "https://name.test/x", local_policy(private_hosts=HostList()), Dns({"name.test": [address]})
    )
    assert got.addresses == (address,)


def test_the_allow_list_and_the_private_allowance_name_their_settings() -> None:
    dns = Dns({"name.test": ["10.0.0.7"]})
    with pytest.raises(Refused, match=r"fetches no URLs here \(IMAGE_URL_HOSTS is empty\)"):
        net.check("http://name.test/x", local_policy(hosts=HostList()), dns)
    with pytest.raises(
        Refused, match=r"'name.test' .* not allowed \(IMAGE_URL_HOSTS: \*.example.com\)"
    ):
        net.check("http://name.test/x", local_policy(hosts=HostList("*.example.com")), dns)
    allowed = local_policy(private_hosts=HostList("*.test"))
    assert net.check("http://name.test/x", allowed, dns).addresses == ("10.0.0.7",)
    with pytest.raises(Failed, match=r"cannot resolve host 'other.test'"):
        net.check("http://other.test/x", allowed, dns)


# -- the blocking face -------------------------------------------------------------------


def test_fetch_connects_to_the_checked_address_with_the_name_in_host(origin: Origin) -> None:
    assert net.fetch(origin.url("/ok"), local_policy(), resolver=LOCAL) == b"hello world"
    assert origin.seen[-1].host == f"origin.test:{origin.port}"


def test_a_redirect_is_refused_naming_its_target_and_not_followed(origin: Origin) -> None:
    with pytest.raises(
        Refused, match=rf"302 Found, a redirect to 'http://127.0.0.1:{origin.port}/ok'"
    ):
        net.fetch(origin.url("/redirect"), local_policy(), resolver=LOCAL)
    assert [s.path for s in origin.seen] == ["/redirect"]


def test_an_error_status_is_a_failure_with_the_status(origin: Origin) -> None:
    with pytest.raises(Failed, match="answered 404 Not Found") as info:
        net.fetch(origin.url("/missing"), local_policy(), resolver=LOCAL)
    assert info.value.status == 404


def test_sizes_are_capped_by_content_length_then_by_count(origin: Origin) -> None:
    with pytest.raises(
        TooLarge, match=r"5000 bytes \(Content-Length\), over the 1000-byte cap \(MAX_IMAGE_BYTES\)"
    ):
        net.fetch(origin.url("/big"), local_policy(), resolver=LOCAL)
    with pytest.raises(TooLarge, match="more than 1000 bytes"):
        net.fetch(origin.url("/big-unannounced"), local_policy(), resolver=LOCAL)
    assert (
        len(net.fetch(origin.url("/big-unannounced"), local_policy(max_bytes=5000), resolver=LOCAL))
        == 5000
    )


def test_a_truncated_body_is_an_error(origin: Origin) -> None:
    with pytest.raises(Failed, match="sent 40 of the 100 bytes it announced"):
        net.fetch(origin.url("/short"), local_policy(), resolver=LOCAL)


@pytest.mark.parametrize("path", ["/drip-body", "/drip-headers"])
def test_a_dripping_server_is_cut_at_the_total_deadline(origin: Origin, path: str) -> None:
    started = time.monotonic()
    with pytest.raises(Failed, match=r"did not finish within 1s \(IMAGE_URL_TIMEOUT_S\)"):
        net.fetch(origin.url(path), local_policy(), resolver=LOCAL)
    took = time.monotonic() - started
    assert DEADLINE_S * 0.9 <= took < DEADLINE_S + SLACK_S, took


def test_download_renames_only_a_complete_body(origin: Origin, tmp_path: Path) -> None:
    target = tmp_path / "files" / "adapter.safetensors"
    assert net.download(origin.url("/ok"), target, local_policy(), resolver=LOCAL) == 11
    assert target.read_bytes() == b"hello world"
    for path, error in [("/short", Failed), ("/big", TooLarge), ("/big-unannounced", TooLarge)]:
        with pytest.raises(error):
            net.download(origin.url(path), target, local_policy(), resolver=LOCAL)
        assert target.read_bytes() == b"hello world"  # the old file stands, nothing renamed
    assert [p.name for p in target.parent.iterdir()] == ["adapter.safetensors"]  # no temp left


# -- DNS rebinding: checked once, connected to what was checked ---------------------------


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every address either face opens a TCP connection to; the public one is unreachable here."""
    targets: list[str] = []
    real = net.socket.create_connection

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
        targets.append(address[0])
        if address[0] == PUBLIC:
            raise ConnectionRefusedError(f"test: {PUBLIC} is not reachable from here")
        return real(address, *args, **kwargs)

    async def connect_tcp(remote_host: str, remote_port: int, **kwargs: Any) -> Any:
        targets.append(str(remote_host))
        raise ConnectionRefusedError(f"test: {remote_host} is not reachable from here")

    monkeypatch.setattr(net.socket, "create_connection", create_connection)
    monkeypatch.setattr(anyio, "connect_tcp", connect_tcp)
    return targets


def rebinding() -> Dns:
    return Dns({"origin.test": [PUBLIC]}, then=["127.0.0.1"])


def test_rebinding_never_reaches_loopback_sync(
    origin: Origin, connects: list[str], tmp_path: Path
) -> None:
    policy = local_policy(private_hosts=HostList())
    dns = rebinding()
    with pytest.raises(Failed, match="not reachable"):
        net.fetch(origin.url("/ok"), policy, resolver=dns)
    dns = rebinding()
    with pytest.raises(Failed, match="not reachable"):
        net.download(origin.url("/ok"), tmp_path / "f.bin", policy, resolver=dns)
    assert dns.calls == 1 and connects == [PUBLIC, PUBLIC] and origin.seen == []


def test_rebinding_never_reaches_loopback_async(origin: Origin, connects: list[str]) -> None:
    dns = rebinding()
    with pytest.raises(Failed, match="not reachable"):
        post(origin.url("/hook"), policy=local_policy(private_hosts=HostList()), resolver=dns)
    assert dns.calls == 1 and connects == [PUBLIC] and origin.seen == []


# -- the async face ----------------------------------------------------------------------


def test_post_sends_the_body_to_the_checked_address_and_returns_the_status(origin: Origin) -> None:
    headers = {"content-type": "application/json", "webhook-id": "msg_1"}
    assert post(origin.url("/hook"), b'{"a": 1}', headers) == 204
    assert origin.seen[-1] == Seen("POST", "/hook", f"origin.test:{origin.port}", b'{"a": 1}')
    assert post(origin.url("/fail")) == 500


def test_post_refuses_a_redirect_and_non_global_targets(origin: Origin) -> None:
    with pytest.raises(
        Refused, match=r"307 Temporary Redirect, a redirect to 'http://169.254.169.254/latest'"
    ):
        post(origin.url("/redirect"))
    with pytest.raises(Refused, match=r"resolves to 127.0.0.1, a loopback address"):
        post(origin.url("/hook", "elsewhere.test"), resolver=Dns({"elsewhere.test": ["127.0.0.1"]}))
    with pytest.raises(Refused, match=r"a 6to4 \(127.0.0.1: loopback\)"):
        post("http://[2002:7f00:1::]/hook")
    assert [s.path for s in origin.seen] == ["/redirect"]


def test_post_is_cut_at_the_total_deadline(origin: Origin) -> None:
    started = time.monotonic()
    with pytest.raises(Failed, match="did not finish within 1s"):
        post(origin.url("/drip-headers"), b"{}")
    took = time.monotonic() - started
    assert DEADLINE_S * 0.9 <= took < DEADLINE_S + SLACK_S, took


# -- TLS: pinned to an address, still verified for the name ------------------------------


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A test CA and a certificate for good.test signed by it (openssl's command line)."""
    folder = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = [
        [
            "openssl",
            "req",
            "-x509",
            *ec,
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=net test CA",
        ],
        [
            "openssl",
            "req",
            *ec,
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=good.test",
        ],
    ]
    for command in run:
        subprocess.run(command, cwd=folder, check=True, capture_output=True)
    (folder / "ext.cnf").write_text(
        "subjectAltName=DNS:good.test\nbasicConstraints=CA:FALSE\nauthorityKeyIdentifier=keyid\n"
    )
    subprocess.run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
        cwd=folder,
        check=True,
        capture_output=True,
    )
    return folder / "ca.pem", folder / "leaf.pem", folder / "leaf.key"


@pytest.fixture
def tls_origin(certificates: tuple[Path, Path, Path]) -> Iterator[tuple[Origin, ssl.SSLContext]]:
    ca, leaf, key = certificates
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(leaf, key)
    for origin in _serve(server):
        yield origin, ssl.create_default_context(cafile=str(ca))


def test_tls_to_a_pinned_address_verifies_the_host_name(
    tls_origin: tuple[Origin, ssl.SSLContext],
) -> None:
    origin, trust = tls_origin
    good = origin.url("/ok", "good.test", "https")
    assert net.fetch(good, local_policy(), resolver=LOCAL, tls=trust) == b"hello world"
    assert post(origin.url("/hook", "good.test", "https"), tls=trust) == 204
    wrong = origin.url("/ok", "origin.test", "https")  # same address, a name the cert lacks
    with pytest.raises(Failed, match="certificate"):
        net.fetch(wrong, local_policy(), resolver=LOCAL, tls=trust)
    with pytest.raises(Failed, match=r"certificate|CERTIFICATE"):
        post(origin.url("/hook", "origin.test", "https"), tls=trust)
    assert [s.path for s in origin.seen] == ["/ok", "/hook"]
