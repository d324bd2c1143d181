"""LoRA adapters through the whole path with the mock model: exact pixels, cache, batching,
bad input, and every front door (HTTP, batch route, CLI, batch jobs, UI form, GET /, metrics)."""

from __future__ import annotations

import asyncio
import base64
import json
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from inference.errors import InvalidRequest
from inference.http.app import create_app
from inference.lora.sources import AdapterSources
from inference.lora_spec import parse_list
from inference.models.mock import MockModel
from inference.service import Service
from inference.settings import Settings
from tests.lora_files import file_server, mock_adapter

SMALL = {"width": 64, "height": 64, "steps": 4}


def lora_service(lora_dir: Path, **settings: Any) -> Service:
    """A mock service with adapters under ``lora_dir``; no result cache, so every request
    reaches the model and its adapters (a repeated seeded request would be a cache hit)."""
    s = Settings(lora_dir=lora_dir, **{"result_cache_mb": 0, **settings})
    return Service(MockModel.from_settings(s), s).start()


@pytest.fixture
def lora_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "loras"
    mock_adapter(folder / "warm.safetensors", gamma=0.05, beta=0.1)
    mock_adapter(folder / "cool.safetensors", beta=-0.05)
    mock_adapter(folder / "style" / "pytorch_lora_weights.safetensors", gamma=-0.2)
    return folder


@pytest.fixture
def service(lora_dir: Path) -> Iterator[Service]:
    svc = lora_service(lora_dir, max_wait_ms=0)
    yield svc
    svc.stop()


def image(service: Service, **request: Any) -> bytes:
    return service.generate({"seed": 3, **SMALL, **request}).images[0].data


def reference(tmp_path: Path, gamma: float, beta: float) -> bytes:
    """The image the mock draws with these weights and no adapter at all."""
    weights = tmp_path / f"w-{gamma}-{beta}.json"
    weights.write_text(json.dumps({"gamma": gamma, "beta": beta}))
    svc = Service(MockModel(weights), Settings()).start()
    try:
        return image(svc)
    finally:
        svc.stop()


def test_adapters_apply_their_scaled_deltas_exactly(service: Service, tmp_path: Path) -> None:
    loras = [{"ref": "local:warm.safetensors", "scale": 0.5}, {"ref": "local:style", "scale": 1}]
    got = image(service, loras=loras)
    assert got == reference(tmp_path, 0.82 + 0.5 * 0.05 - 0.2, 0.15 + 0.5 * 0.1)
    assert got != image(service, loras=[])


def test_no_adapter_after_adapters_and_scale_zero_are_the_base_image(service: Service) -> None:
    base = image(service)
    image(service, loras=[{"ref": "local:warm.safetensors"}])
    assert image(service) == base
    assert image(service, loras=[{"ref": "local:warm.safetensors", "scale": 0}]) == base


def test_requests_batch_only_with_the_same_adapters_and_scales(lora_dir: Path) -> None:
    svc = lora_service(lora_dir, max_wait_ms=300)
    variants: list[list[dict[str, Any]]] = [
        [],
        [{"ref": "local:warm.safetensors"}],
        [{"ref": "local:warm.safetensors", "scale": 0.5}],
        [{"ref": "local:cool.safetensors"}],
    ]
    try:
        solo = [image(svc, loras=v) for v in variants]

        async def burst() -> list[Any]:
            requests = [{"seed": 3, **SMALL, "loras": v} for v in variants for _ in range(2)]
            return await asyncio.gather(*(svc.submit(r) for r in requests))

        results = asyncio.run(burst())
    finally:
        svc.stop()
    for i, result in enumerate(results):
        assert result.images[0].data == solo[i // 2]  # never another adapter's pixels
        assert result.batch_size <= 2  # only the request with the same adapters joined
    assert max(r.batch_size for r in results) == 2


def test_the_cache_loads_once_evicts_least_recent_and_get_root_lists_it(lora_dir: Path) -> None:
    svc = lora_service(lora_dir, max_wait_ms=0, lora_cache_max_count=2, max_loras=2)
    try:
        for ref in ("warm.safetensors", "cool.safetensors", "warm.safetensors", "style"):
            image(svc, loras=[{"ref": f"local:{ref}"}])
        stats = svc.model.adapters.cache.stats
        assert (stats.hits, stats.misses, stats.evictions) == (1, 3, 1)
        assert [a["ref"] for a in svc.info()["loras"]] == ["local:warm.safetensors", "local:style"]
        with TestClient(create_app(svc.settings, svc)) as client:
            assert [a["ref"] for a in client.get("/").json()["loras"]] == [
                "local:warm.safetensors",
                "local:style",
            ]
            metrics = client.get("/metrics").text
        assert "inference_lora_cache_hits_total 1.0" in metrics
        assert "inference_lora_cache_misses_total 3.0" in metrics
        assert "inference_lora_cache_evictions_total 1.0" in metrics
        assert "inference_lora_loaded 2.0" in metrics
    finally:
        svc.stop()


def test_the_byte_bound_evicts_too(lora_dir: Path) -> None:
    mock_adapter(lora_dir / "a.safetensors", gamma=0.01, pad_bytes=2000)
    mock_adapter(lora_dir / "b.safetensors", gamma=0.02, pad_bytes=2000)
    svc = lora_service(lora_dir, max_wait_ms=0, lora_cache_max_bytes=3000)
    try:
        image(svc, loras=[{"ref": "local:a.safetensors"}])
        image(svc, loras=[{"ref": "local:b.safetensors"}])
        assert [a["ref"] for a in svc.info()["loras"]] == ["local:b.safetensors"]
    finally:
        svc.stop()


def test_default_loras_apply_when_omitted_and_an_empty_list_opts_out(lora_dir: Path) -> None:
    svc = lora_service(lora_dir, max_wait_ms=0, default_loras="local:warm.safetensors:0.5")
    plain = lora_service(lora_dir, max_wait_ms=0)
    try:
        with_default = image(svc)
        assert with_default == image(plain, loras=[{"ref": "local:warm.safetensors", "scale": 0.5}])
        assert image(svc, loras=[]) == image(plain)
    finally:
        svc.stop()
        plain.stop()


@pytest.fixture
def client(lora_dir: Path) -> Iterator[TestClient]:
    (lora_dir / "evil.pt").write_bytes(pickle.dumps({"x": 1}))
    (lora_dir / "evil.safetensors").write_bytes(pickle.dumps({"x": 1}))
    (lora_dir.parent / "outside.safetensors").write_bytes(b"")
    mock_adapter(lora_dir / "big.safetensors", gamma=0.0, pad_bytes=4000)
    mock_adapter(lora_dir / "unfit.safetensors", gamma=0.1)
    import torch
    from safetensors.torch import save_file

    save_file({"lora.gamma": torch.zeros(2, 2)}, str(lora_dir / "unfit.safetensors"))
    save_file({"lora_unet.down.weight": torch.zeros(4, 8)}, str(lora_dir / "sdxl.safetensors"))
    mock_adapter(lora_dir / "strong.safetensors", gamma=0.5)
    settings = Settings(lora_dir=lora_dir, max_wait_ms=0, lora_max_file_bytes=2048)
    svc = Service(MockModel.from_settings(settings), settings).start()
    with TestClient(create_app(settings, svc)) as test_client:
        yield test_client
    svc.stop()


@pytest.mark.parametrize(
    ("loras", "named"),
    [
        ([{"ref": "local:../outside.safetensors"}], "not outside it"),
        ([{"ref": "local:nope.safetensors"}], "no file 'nope.safetensors' there"),
        ([{"ref": "local:evil.pt"}], "is a pickle"),
        ([{"ref": "local:evil.safetensors"}], "is not a safetensors file"),
        ([{"ref": "local:big.safetensors"}], "LORA_MAX_FILE_BYTES=2048"),
        ([{"ref": "local:unfit.safetensors"}], "does not fit model 'mock'"),
        ([{"ref": "local:sdxl.safetensors"}], "does not fit model 'mock'"),
        ([{"ref": "local:strong.safetensors", "scale": 0.5}], "lower their scales"),
        ([{"ref": "https://example.com/a.safetensors"}], "URLs are off on this server"),
        ([{"ref": "owner/name/model.ckpt"}], "is a pickle"),
        ([{"ref": "not a ref"}], "is not a hub id"),
        ([{"ref": "local:warm.safetensors", "scale": -1}], "loras.0.scale"),
        ([{"ref": "local:warm.safetensors", "scale": 100}], "less than or equal to 4"),
        ([{"ref": f"local:{i}"} for i in range(4)], "at most 3 adapters per request"),
        ([{"ref": f"local:{i}"} for i in range(5)], "at most 4 items"),
        ([{"ref": "local:warm.safetensors"}] * 2, "listed twice"),
        ([{"ref": "ówner/náme"}], "is not a hub id"),
        ([{"ref": "owner/name\n"}], "is not a hub id"),
        ([{"ref": "local:warm.safetensors", "scale": "1"}], "loras.0.scale"),
        ([{"ref": "local:warm.safetensors", "scale": True}], "loras.0.scale"),
    ],
)
def test_bad_adapters_get_422_naming_the_adapter(
    client: TestClient, loras: list[dict[str, Any]], named: str
) -> None:
    response = client.post("/predict", json={"seed": 1, **SMALL, "loras": loras})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert named in error["message"], error
    assert error.get("field", "loras").startswith("loras"), error
    assert client.get("/ready").status_code == 200  # the server lives on


def test_a_request_whose_adapter_fails_to_load_fails_alone(client: TestClient) -> None:
    """Known only when loaded (the file passes every check before): only its request fails."""
    requests = [
        {"seed": 1, **SMALL},
        {"seed": 2, **SMALL, "loras": [{"ref": "local:unfit.safetensors"}]},
        {"seed": 3, **SMALL, "loras": [{"ref": "local:warm.safetensors"}]},
    ]
    response = client.post("/predict/batch", json={"requests": requests})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[0]["result"] and results[2]["result"], results
    assert "does not fit model 'mock'" in results[1]["error"]["message"]
    assert client.post("/predict", json={"seed": 4, **SMALL}).status_code == 200


def test_unknown_hub_id_fails_naming_it(lora_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(lora_dir.parent / "hf"))
    offline = lora_service(lora_dir, max_wait_ms=0, hf_hub_offline=True)
    online = lora_service(lora_dir, max_wait_ms=0)  # the Hub is unreachable in tests
    try:
        with pytest.raises(InvalidRequest, match=r"'nobody/nothing'.*HF_HUB_OFFLINE"):
            offline.job({"loras": [{"ref": "nobody/nothing"}]})
        with pytest.raises(InvalidRequest, match=r"'nobody/nothing': .*(unreachable|download)"):
            image(online, loras=[{"ref": "nobody/nothing"}])
        assert image(online) == image(offline)
    finally:
        offline.stop()
        online.stop()


def test_a_hub_that_cannot_be_reached_is_named_as_such(
    lora_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """huggingface_hub's "not in the cache and no network" error is an EntryNotFoundError too:
    it must read as the Hub being unreachable, not as a file the repository lacks."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def unreachable(*args: object, **kwargs: object) -> None:
        raise LocalEntryNotFoundError("no connection and nothing in the cache")

    monkeypatch.setenv("HF_HOME", str(lora_dir.parent / "hf"))
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", unreachable)
    sources = AdapterSources(Settings(lora_dir=lora_dir))
    with pytest.raises(InvalidRequest, match="Hub is unreachable") as raised:
        sources.fetch("nobody/nothing")
    assert "has no file" not in raised.value.message


def test_url_adapters_come_only_from_allowed_public_hosts(lora_dir: Path, tmp_path: Path) -> None:
    mock_adapter(tmp_path / "site" / "a.safetensors", gamma=0.05, beta=0.1)
    (tmp_path / "site" / "a.bin").write_bytes(b"x")
    with file_server(tmp_path / "site") as (url, hits):
        common = {"max_wait_ms": 0, "lora_download_dir": tmp_path / "downloads"}
        allowed = lora_service(
            lora_dir, lora_allowed_hosts="127.0.0.1", lora_allow_private_urls=True, **common
        )
        # A download folder of its own: a file already downloaded is served without a lookup.
        fresh = {**common, "lora_download_dir": tmp_path / "fresh"}
        public_only = lora_service(lora_dir, lora_allowed_hosts="127.0.0.1", **fresh)
        other_host = lora_service(lora_dir, lora_allowed_hosts="example.com", **common)
        try:
            ref = f"{url}/a.safetensors"
            got = image(allowed, loras=[{"ref": ref}])
            assert got == image(allowed, loras=[{"ref": "local:warm.safetensors"}])
            allowed.model.adapters.cache.max_count = 1  # force a reload from the disk copy
            image(allowed, loras=[{"ref": "local:cool.safetensors"}])
            assert image(allowed, loras=[{"ref": ref}]) == got
            assert hits == {"/a.safetensors": 1}  # downloaded once per machine
            with pytest.raises(InvalidRequest, match="redirects are not followed"):
                image(allowed, loras=[{"ref": f"{url}/redirect.safetensors"}])
            with pytest.raises(InvalidRequest, match=r"must name a file ending in \.safetensors"):
                image(allowed, loras=[{"ref": f"{url}/a.bin"}])
            with pytest.raises(
                InvalidRequest, match=r"loopback address.*LORA_ALLOW_PRIVATE_URLS=1"
            ):
                public_only.job({"loras": [{"ref": ref}]})
            with pytest.raises(InvalidRequest, match=r"host '127\.0\.0\.1' of .* is not allowed"):
                other_host.job({"loras": [{"ref": ref}]})
        finally:
            for svc in (allowed, public_only, other_host):
                svc.stop()


def test_a_url_whose_file_name_is_too_long_for_the_disk_is_served(
    lora_dir: Path, tmp_path: Path
) -> None:
    """The file on disk is named after the URL's hash, so a last path segment over the file
    system's 255 bytes neither fails with a 500 nor needs the disk to hold that name."""
    mock_adapter(tmp_path / "site" / "a.safetensors", gamma=0.05, beta=0.1)
    with file_server(tmp_path / "site") as (url, hits):
        settings = Settings(
            lora_dir=lora_dir,
            max_wait_ms=0,
            result_cache_mb=0,
            lora_allowed_hosts="127.0.0.1",
            lora_allow_private_urls=True,
            lora_download_dir=tmp_path / "downloads",
        )
        svc = Service(MockModel.from_settings(settings), settings).start()
        try:
            with TestClient(create_app(settings, svc)) as client:
                long_ref = f"{url}/{'a' * 300}.safetensors"
                got = client.post(
                    "/predict", json={"seed": 3, **SMALL, "loras": [{"ref": long_ref}]}
                )
                assert got.status_code == 200, got.text
            assert base64.b64decode(got.json()["images"][0]["data"]) == image(
                svc, loras=[{"ref": "local:warm.safetensors"}]
            )
        finally:
            svc.stop()
    assert sum(hits.values()) == 1


def test_text_form_keeps_url_ports_and_reads_scales() -> None:
    assert parse_list("owner/name:0.5, local:a:1.5 ,http://h:8080/a.safetensors,,") == [
        {"ref": "owner/name", "scale": 0.5},
        {"ref": "local:a", "scale": 1.5},
        {"ref": "http://h:8080/a.safetensors"},
    ]


def test_cli_lora_flag_and_batch_job_lines(lora_dir: Path, tmp_path: Path) -> None:
    import subprocess

    from tests.servers import ROOT

    env = {"LORA_DIR": str(lora_dir), "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    out = tmp_path / "cli.png"
    flags = ["--seed", "3", "--width", "64", "--height", "64", "--steps", "4", "-q"]
    command = [sys.executable, "-m", "inference", "predict", *flags, "-o", str(out)]
    lora_flags = ["--lora", "local:warm.safetensors:0.5", "--lora", "local:style"]
    proc = subprocess.run([*command, *lora_flags], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = tmp_path / "jobs.jsonl"
    loras = [{"ref": "local:warm.safetensors", "scale": 0.5}, {"ref": "local:style"}]
    lines.write_text(json.dumps({"seed": 3, **SMALL, "loras": loras}) + "\n")
    batch = [sys.executable, "-m", "inference", "batch", str(lines), "-q"]
    proc = subprocess.run(
        [*batch, "--output-dir", str(tmp_path / "jobs")], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    (job_image,) = (tmp_path / "jobs").glob("*.png")
    svc = lora_service(lora_dir, max_wait_ms=0)
    try:
        expected = image(svc, loras=loras)
    finally:
        svc.stop()
    assert out.read_bytes() == expected == job_image.read_bytes()
    bad = subprocess.run(
        [*command, "--lora", "local:nope"], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "'local:nope'" in bad.stderr


def test_the_ui_form_reads_its_adapter_box() -> None:
    from inference.ui import _request

    names = ["seed", "randomize_seed", "loras"]
    assert _request(names, (1, False, "local:a:0.5, owner/name"))["loras"] == [
        {"ref": "local:a", "scale": 0.5},
        {"ref": "owner/name"},
    ]
    assert "loras" not in _request(names, (1, False, ""))


def test_settings_refuse_more_adapters_per_request_than_the_cache_holds() -> None:
    with pytest.raises(ValueError, match="MAX_LORAS=3 exceeds LORA_CACHE_MAX_COUNT=2"):
        Settings(lora_cache_max_count=2)


def test_openapi_bounds_loras_by_max_loras(lora_dir: Path) -> None:
    settings = Settings(lora_dir=lora_dir, max_loras=2)
    svc = Service(MockModel.from_settings(settings), settings)
    schema = create_app(settings, svc).openapi()["components"]["schemas"]
    (array,) = [
        b for b in schema["GenerateRequest"]["properties"]["loras"]["anyOf"] if "items" in b
    ]
    assert array["maxItems"] == 2


@pytest.mark.parametrize(
    "parts",
    [
        [("loras", "local:warm.safetensors:0.5")],
        [("loras", "local:warm.safetensors:0.5,local:cool.safetensors:0")],
        [("loras", "local:warm.safetensors:0.5"), ("loras", "local:cool.safetensors:0")],
        [("loras", '{"ref": "local:warm.safetensors", "scale": 0.5}')],
        [("loras", '[{"ref": "local:warm.safetensors", "scale": 0.5}]')],
    ],
)
def test_a_form_sends_loras_as_text_or_json_parts(
    client: TestClient, parts: list[tuple[str, str]]
) -> None:
    """Each documented form spelling draws what the JSON body draws (``cool`` at 0 is off)."""
    fields = [("seed", "1"), ("width", "64"), ("height", "64"), ("steps", "4"), *parts]
    form = client.post("/predict", files=[(n, (None, v)) for n, v in fields])
    assert form.status_code == 200, form.text
    loras = [{"ref": "local:warm.safetensors", "scale": 0.5}]
    body = client.post("/predict", json={"seed": 1, **SMALL, "loras": loras})
    assert form.json()["images"][0]["data"] == body.json()["images"][0]["data"]


def test_a_form_part_of_bad_json_names_the_field(client: TestClient) -> None:
    form = client.post("/predict", files=[("loras", (None, "[{oops"))])
    assert form.status_code == 422 and "loras: a part is not valid JSON" in form.text
