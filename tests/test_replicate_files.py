"""Replicate's file uploads, driven by the official ``replicate`` client (1.0.7) against the real
server process.

The client uploads a file input (an open file, a ``Path``) with ``POST /v1/files`` and puts the
file's ``urls.get`` in the input; the server reads it from its own store, so ``run`` gives the
bytes of ``POST /predict`` with the image itself. The file API's shape, its bounds
(MAX_IMAGE_BYTES a file; FILES_MAX_COUNT, FILES_MAX_BYTES, FILES_TTL_S the store) and its
/metrics series are checked here too.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from inference.http.app import create_app
from inference.http.protocols.replicate.file_store import FileStore, StoredFile
from inference.settings import Settings
from tests.servers import inference_server
from tests.test_http import metric
from tests.test_img2img import photo, png

replicate = pytest.importorskip("replicate")
from replicate.exceptions import ReplicateError  # noqa: E402

from tests import test_predictions_replicate as predictions  # noqa: E402

TOKEN = predictions.TOKEN
client = predictions.client  # the official client on this module's `url`

AUTH = {"authorization": f"Bearer {TOKEN}"}
REQUEST = {"prompt": "a red fox", "seed": 8, "width": 64, "height": 64, "steps": 4}
MAX_IMAGE_BYTES = 100_000
MAX_FILES = 3


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    env = {
        "AUTH_TOKEN": TOKEN,
        "MAX_WAIT_MS": "0",
        "MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
        "FILES_MAX_COUNT": str(MAX_FILES),
    }
    with inference_server(env) as base:
        yield base


def predict_bytes(url: str, request: dict[str, Any]) -> list[bytes]:
    for name in ("image", "mask"):
        if name in request:
            request = {**request, name: base64.b64encode(request[name]).decode("ascii")}
    response = httpx.post(f"{url}/predict", json=request, headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    return [base64.b64decode(image["data"]) for image in response.json()["images"]]


def test_run_with_an_open_file_and_a_path_gives_the_bytes_of_predict(
    url: str, client: Any, tmp_path: Path
) -> None:
    image = png(photo(seed=3))
    path = tmp_path / "photo.png"
    path.write_bytes(image)
    expected = predict_bytes(url, {**REQUEST, "image": image})
    with path.open("rb") as opened:
        from_file = client.run("a/b", input={**REQUEST, "image": opened})
    from_path = client.run("a/b", input={**REQUEST, "image": path})
    assert [o.read() for o in from_file] == expected
    assert [o.read() for o in from_path] == expected
    # Not text-to-image: the image made a difference.
    assert expected != predict_bytes(url, REQUEST)


def test_the_file_object_and_its_lifecycle(url: str, client: Any) -> None:
    image = png(photo(seed=4))
    file = client.files.create(io.BytesIO(image), filename="me.png", metadata={"k": "v"})
    assert (file.name, file.content_type, file.size, file.metadata) == (
        "me.png",
        "image/png",
        len(image),
        {"k": "v"},
    )
    assert file.checksums == {
        "sha256": hashlib.sha256(image).hexdigest(),
        "md5": hashlib.md5(image).hexdigest(),
    }
    created, expires = (datetime.fromisoformat(t) for t in (file.created_at, file.expires_at))
    assert (expires - created).total_seconds() == pytest.approx(3600)  # FILES_TTL_S
    assert file.urls["get"] == f"{url}/v1/files/{file.id}"
    assert client.files.get(file.id).checksums == file.checksums
    assert file.id in [f.id for f in client.files.list()]
    download = httpx.get(f"{url}/v1/files/{file.id}/download", headers=AUTH)
    assert download.content == image and download.headers["content-type"] == "image/png"
    # A prediction may name it by its URL; once deleted, the input is a 422 naming the field.
    prediction = client.predictions.create(
        version="v", input={**REQUEST, "image": file.urls["get"]}
    )
    prediction.wait()
    assert prediction.status == "succeeded"
    assert client.files.delete(file.id) is True
    with pytest.raises(ReplicateError) as missing:
        client.files.get(file.id)
    assert missing.value.status == 404 and file.id in str(missing.value.detail)
    with pytest.raises(ReplicateError) as gone:
        client.predictions.create(version="v", input={**REQUEST, "image": file.urls["get"]})
    assert gone.value.status == 422 and "upload it again" in str(gone.value.detail)
    assert str(gone.value.detail).startswith(f"input.image: file {file.id!r}")


def test_the_files_routes_need_the_token(url: str) -> None:
    for method, path in (("POST", "/v1/files"), ("GET", "/v1/files"), ("GET", "/v1/files/x")):
        response = httpx.request(method, f"{url}{path}")
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"


def test_a_file_over_max_image_bytes_is_a_413(client: Any) -> None:
    with pytest.raises(ReplicateError) as raised:
        client.files.create(io.BytesIO(b"x" * (MAX_IMAGE_BYTES + 1)), filename="big.png")
    assert raised.value.status == 413 and "MAX_IMAGE_BYTES" in str(raised.value.detail)


def test_a_body_without_a_content_part_is_a_422_saying_what_to_send(url: str) -> None:
    response = httpx.post(f"{url}/v1/files", files={"file": ("a.png", b"x")}, headers=AUTH)
    assert response.status_code == 422 and "'content'" in response.json()["detail"]
    bad = httpx.post(
        f"{url}/v1/files",
        files={"content": ("a.png", b"x")},
        data={"metadata": "[1]"},
        headers=AUTH,
    )
    assert bad.status_code == 422 and "metadata must be a JSON object" in bad.json()["detail"]


def test_the_store_keeps_files_max_count_and_shows_on_metrics(url: str, client: Any) -> None:
    made = [client.files.create(io.BytesIO(png(photo(seed=s)))) for s in range(MAX_FILES + 1)]
    with pytest.raises(ReplicateError):
        client.files.get(made[0].id)  # the oldest made room
    assert [f.id for f in client.files.list()] == [f.id for f in reversed(made[1:])]
    text = httpx.get(f"{url}/metrics", headers=AUTH).text
    assert metric(text, "inference_store_items", store="files") == MAX_FILES
    held = sum(f.size for f in made[1:])
    assert metric(text, "inference_store_bytes", store="files") == held


def test_a_url_of_another_host_is_not_read_from_the_store(client: Any) -> None:
    file = client.files.create(io.BytesIO(png(photo(seed=5))))
    elsewhere = file.urls["get"].replace("127.0.0.1", "files.example.com")
    with pytest.raises(ReplicateError) as raised:
        client.predictions.create(version="v", input={**REQUEST, "image": elsewhere})
    assert raised.value.status == 422 and "INPUT_URL_HOSTS" in str(raised.value.detail)


def test_the_store_forgets_files_after_their_ttl_and_within_its_bytes() -> None:
    now = [0.0]
    store = FileStore(max_count=10, max_bytes=250, ttl_s=60, clock=lambda: now[0])
    first = store.put(StoredFile("a", "a", "image/png", b"1" * 100))
    store.put(StoredFile("b", "b", "image/png", b"2" * 100))
    store.put(StoredFile("c", "c", "image/png", b"3" * 100))  # 300 > 250: "a" goes
    assert store.get("a") is None and store.bytes == 200 and len(store) == 2
    assert first.expires == 60
    now[0] = 59.9
    assert store.get("b") is not None
    now[0] = 60.0
    assert store.get("b") is None and store.newest_first() == [] and store.bytes == 0


def test_a_file_over_files_max_bytes_is_a_413_and_the_store_keeps_what_it_held() -> None:
    settings = Settings(files_max_bytes=1_000_000, max_image_bytes=2_000_000)
    with TestClient(create_app(settings)) as http:
        kept = http.post("/v1/files", files={"content": ("a.png", b"a" * 1000)})
        assert kept.status_code == 201, kept.text
        big = http.post("/v1/files", files={"content": ("b.png", b"b" * 1_000_001)})
        assert big.status_code == 413, big.text
        assert big.headers["content-type"] == "application/problem+json"
        assert "FILES_MAX_BYTES" in big.json()["detail"]
        assert [f["id"] for f in http.get("/v1/files").json()["results"]] == [kept.json()["id"]]


def test_checksums_are_computed_once_at_upload_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Get and list read the stored checksums: hashing a full store on every list stalled the
    loop for most of a second."""
    data = png(photo(seed=6))
    calls: list[bool] = []  # per SHA-256 of the upload: whether it ran on an event loop
    real = hashlib.sha256

    def counting(given: bytes = b"", **kwargs: Any) -> Any:
        if given == data:
            try:
                asyncio.get_running_loop()
                calls.append(True)
            except RuntimeError:
                calls.append(False)
        return real(given, **kwargs)

    monkeypatch.setattr(hashlib, "sha256", counting)
    with TestClient(create_app(Settings())) as http:
        made = http.post("/v1/files", files={"content": ("a.png", data)}).json()
        got = http.get(f"/v1/files/{made['id']}").json()
        listed = http.get("/v1/files").json()["results"]
    assert calls == [False]
    expected = {"sha256": real(data).hexdigest(), "md5": hashlib.md5(data).hexdigest()}
    assert made["checksums"] == got["checksums"] == listed[0]["checksums"] == expected
    assert made["etag"] == expected["md5"]
