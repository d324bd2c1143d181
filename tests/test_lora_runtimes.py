"""LoRA adapters through Cog (lora_weights/lora_scale, trained weights from a URL) and Modal."""

from __future__ import annotations

import asyncio
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inference.errors import ModelLoadError
from inference.models.mock import MockModel
from inference.service import Service
from inference.settings import Settings
from tests.lora_files import file_server, mock_adapter
from tests.servers import ROOT

pytest.importorskip("cog", reason="the cog extra is not installed")
SMALL = {"seed": 3, "width": 64, "height": 64, "steps": 4}


@pytest.fixture
def predict_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import predict

    return predict


def cog_inputs(**overrides: Any) -> dict[str, Any]:
    from tests.test_cog import _inspect

    inputs = {name: field.default for name, field in _inspect(ROOT).items()}
    return {**inputs, **SMALL, **overrides}


def run(predictor: Any, **inputs: Any) -> bytes:
    (path,) = asyncio.run(predictor.predict(**cog_inputs(**inputs)))
    return path.read_bytes()


def expected(lora_dir: Path, **request: Any) -> bytes:
    settings = Settings(lora_dir=lora_dir, max_wait_ms=0)
    svc = Service(MockModel.from_settings(settings), settings).start()
    try:
        return svc.generate({**SMALL, **request}).images[0].data
    finally:
        svc.stop()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, dict[str, int]]]:
    mock_adapter(tmp_path / "site" / "trained.safetensors", gamma=0.05, beta=0.1)
    with file_server(tmp_path / "site") as served:
        yield served


def test_trained_lora_url_is_downloaded_once_and_served_as_the_default_adapter(
    predict_module: Any,
    site: tuple[str, dict[str, int]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, hits = site
    monkeypatch.setenv("LORA_ALLOW_PRIVATE_URLS", "1")  # the test server is on 127.0.0.1
    lora_dir = tmp_path / "site"
    for _ in range(2):  # a second container start on the same machine: no second download
        predictor = predict_module.Predictor()
        predictor.setup(weights=f"{url}/trained.safetensors")
        try:
            trained = run(predictor)
            assert trained == expected(lora_dir, loras=[{"ref": "local:trained.safetensors"}])
            assert run(predictor, lora_scale=0.5) == expected(
                lora_dir, loras=[{"ref": "local:trained.safetensors", "scale": 0.5}]
            )
            assert run(predictor, lora_scale=0.0) == expected(lora_dir, loras=[])
            assert predictor.service.info()["loras"][0]["ref"].endswith("trained.safetensors")
        finally:
            predictor.service.stop()
    assert hits == {"/trained.safetensors": 1}


def test_lora_weights_input_names_adapters_with_lora_scale(
    predict_module: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lora_dir = tmp_path / "loras"
    mock_adapter(lora_dir / "a.safetensors", gamma=0.05)
    mock_adapter(lora_dir / "b.safetensors", beta=0.2)
    monkeypatch.setenv("LORA_DIR", str(lora_dir))
    predictor = predict_module.Predictor()
    predictor.setup()
    try:
        got = run(
            predictor, lora_weights="local:a.safetensors, local:b.safetensors:2", lora_scale=0.5
        )
        loras = [
            {"ref": "local:a.safetensors", "scale": 0.5},
            {"ref": "local:b.safetensors", "scale": 2},
        ]
        assert got == expected(lora_dir, loras=loras)
        assert run(predictor) == expected(lora_dir)
        with pytest.raises(ValueError, match=r"'local:nope\.safetensors'"):
            run(predictor, lora_weights="local:nope.safetensors")
    finally:
        predictor.service.stop()


def test_trained_weights_archive_of_a_diffusers_folder_becomes_the_model(
    tiny_pipeline_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inference.lora.trained import trained_weights

    site = tmp_path / "site"
    site.mkdir()
    with tarfile.open(site / "model.tar.gz", "w:gz") as tar:
        tar.add(tiny_pipeline_dir, arcname="model")
    with file_server(site) as (url, hits):
        settings = Settings(lora_allow_private_urls=True, lora_download_dir=tmp_path / "dl")
        first = trained_weights(f"{url}/model.tar.gz", settings)
        again = trained_weights(f"{url}/model.tar.gz", settings)
        assert first == again and (Path(first["model"]) / "model_index.json").is_file()
        assert hits == {"/model.tar.gz": 1}
        with pytest.raises(ModelLoadError, match=r"loopback address.*LORA_ALLOW_PRIVATE_URLS=1"):
            trained_weights(f"{url}/model.tar.gz", Settings())
        with pytest.raises(ModelLoadError, match=r"must name a file ending in"):
            trained_weights(f"{url}/model.ckpt", settings)


def test_modal_local_generate_applies_adapters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("modal")
    lora_dir = tmp_path / "loras"
    mock_adapter(lora_dir / "a.safetensors", gamma=0.05)
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "no-modal.toml"))
    monkeypatch.setenv("LORA_DIR", str(lora_dir))
    monkeypatch.syspath_prepend(str(ROOT))
    import deploy

    obj = deploy.Model()
    loras = [{"ref": "local:a.safetensors", "scale": 0.5}]
    try:
        result = obj.generate.local({**SMALL, "loras": loras})
        assert result["images"][0]["data"] == expected(lora_dir, loras=loras)
    finally:
        obj.web.local().state.service.stop()
