"""One tiny diffusers pipeline, three runtimes, one image.

The tiny random Stable Diffusion pipeline (``tiny_pipeline_dir``) is served through the HTTP
app (a real uvicorn subprocess with ``MODEL=<folder>``), through Cog's real prediction server
(coglet, started as tests/test_cog.py starts it) and through the Modal class's ``.local()``.
Each must return the very PNG the in-process service makes for the same request: the runtimes
are adapters, so any difference is a bug in one of them.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

pytest.importorskip("diffusers")

from PIL import Image

from inference.schema import GenerateRequest
from inference.service import Service
from inference.settings import Settings
from tests.servers import inference_server

#: diffusers' schedulers call np.array() on tensors; numpy 2 warns about it on every call.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
REQUEST: dict[str, Any] = {
    "prompt": "a lighthouse at dusk",
    "negative_prompt": "fog",
    "seed": 1234,
    "steps": 3,
    "num_outputs": 2,
    "scheduler": "euler",
}
#: Every process computes with one thread, so float reductions run in the same order
#: everywhere and the images are identical to the byte.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture(scope="module")
def expected(tiny_pipeline_dir: Path) -> Iterator[list[bytes]]:
    """The PNGs the in-process engine makes for REQUEST."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    service = Service.from_settings(Settings(model=str(tiny_pipeline_dir), max_wait_ms=0)).start()
    try:
        result = service.generate(GenerateRequest(**REQUEST))
    finally:
        service.stop()
        torch.set_num_threads(threads)
    assert [image.seed for image in result.images] == [1234, 1235]
    assert pixels(result.images[0].data).shape == (64, 64, 3)
    assert result.images[0].data != result.images[1].data
    yield [image.data for image in result.images]


def test_http_app_serves_the_same_images_and_the_models_defaults(
    tiny_pipeline_dir: Path, expected: list[bytes]
) -> None:
    env = {"MODEL": str(tiny_pipeline_dir), "MAX_WAIT_MS": "0", **ONE_THREAD}
    with inference_server(env) as url:
        info = httpx.get(url + "/", timeout=10).json()
        assert info["model"] == str(tiny_pipeline_dir)
        assert info["defaults"] == {
            "steps": 50,
            "prompt_weight": 7.5,
            "width": 64,
            "height": 64,
            "strength": 0.8,
        }
        response = httpx.post(url + "/predict", json=REQUEST, timeout=120)
        assert response.status_code == 200, response.text
        body = response.json()
        assert [base64.b64decode(image["data"]) for image in body["images"]] == expected
        assert body["model"] == str(tiny_pipeline_dir)
        invalid = httpx.post(url + "/predict", json={**REQUEST, "width": 100}, timeout=30)
        assert invalid.status_code == 422
        metrics = httpx.get(url + "/metrics", timeout=10).text
        assert "inference_denoising_steps_total 3.0" in metrics
        assert "inference_model_load_seconds" in metrics


def test_cog_prediction_server_serves_the_same_images(
    tiny_pipeline_dir: Path, expected: list[bytes], tmp_path: Path
) -> None:
    pytest.importorskip("cog._inspector", reason="the cog extra is not installed")
    from tests.test_cog import CogServer, _cog_folder

    server = CogServer(
        _cog_folder(tmp_path / "cog"),
        COG_WEIGHTS=str(tiny_pipeline_dir),  # Cog's weights argument, with MODEL unset (mock)
        MAX_WAIT_MS="0",
        COG_MAX_CONCURRENCY="1",
        **ONE_THREAD,
    )
    try:
        server.wait_for(("READY",), timeout_s=180)
        response = httpx.post(f"{server.url}/predictions", json={"input": REQUEST}, timeout=120)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "succeeded", body
        images = []
        for uri in body["output"]:
            header, _, payload = uri.partition(",")
            assert header == "data:image/png;base64"
            images.append(base64.b64decode(payload))
        assert images == expected
    finally:
        server.stop()


@pytest.mark.filterwarnings("ignore:The .* function is executing locally:UserWarning")
def test_modal_class_local_serves_the_same_images(
    tiny_pipeline_dir: Path, expected: list[bytes], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("modal")
    import torch

    for name in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "no-modal.toml"))
    monkeypatch.setenv("MODEL", str(tiny_pipeline_dir))  # what CONTAINER_ENV carries to Modal
    monkeypatch.setenv("MAX_WAIT_MS", "0")
    import deploy

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    obj = deploy.Model()
    try:
        result = obj.generate.local(dict(REQUEST))  # runs both @modal.enter hooks
        assert [image["data"] for image in result["images"]] == expected
        assert result["model"] == str(tiny_pipeline_dir)
    finally:
        obj.web.local().state.service.stop()  # @modal.exit never runs locally
        torch.set_num_threads(threads)
