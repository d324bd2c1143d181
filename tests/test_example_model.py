"""examples/watermarked.py, a model class of your own, through every front door.

``MODEL=examples.watermarked:WatermarkedModel`` with ``WEIGHTS_PATH`` at the tiny random
pipeline: the HTTP server (POST /predict and the OpenAI route, a real subprocess), the CLI's
``predict`` and ``batch``, Cog's predictor class and Modal's ``.local()`` must each return the
very PNGs the in-process service makes, and those are the pipeline's own images for the
rewritten prompt, watermarked.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

pytest.importorskip("diffusers")

from examples.watermarked import rewrite, watermark
from inference import cli
from inference.codec import decode
from inference.service import Service
from inference.settings import Settings
from tests.cog_inputs import predict_defaults
from tests.servers import inference_server

pytestmark = [
    # diffusers' schedulers call np.array() on tensors; numpy 2 warns about it on every call.
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
    pytest.mark.filterwarnings("ignore:The .* function is executing locally:UserWarning"),
]
MODEL = "examples.watermarked:WatermarkedModel"
REQUEST: dict[str, Any] = {"prompt": "a lighthouse", "seed": 77, "steps": 3, "num_outputs": 2}
#: One thread everywhere, so float reductions run in one order and images match to the byte.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def expected(tiny_pipeline_dir: Path, one_thread: None) -> list[bytes]:
    """The PNGs of the in-process service, checked against the pipeline's own images."""
    settings = Settings(model=MODEL, weights_path=tiny_pipeline_dir, max_wait_ms=0)
    service = Service.from_settings(settings).start()
    plain = Service.from_settings(Settings(model=str(tiny_pipeline_dir), max_wait_ms=0)).start()
    try:
        result = service.generate(REQUEST)
        own = plain.generate({**REQUEST, "prompt": rewrite(REQUEST["prompt"])})
    finally:
        service.stop()
        plain.stop()
    assert result.model == f"watermarked:{tiny_pipeline_dir}"
    for image, pipelines in zip(result.images, own.images, strict=True):
        marked = watermark(decode(pipelines.data))
        assert np.array_equal(decode(image.data), marked)  # rewritten, then watermarked
        assert not np.array_equal(marked, decode(pipelines.data))
    return [image.data for image in result.images]


def test_http_predict_and_the_openai_route(tiny_pipeline_dir: Path, expected: list[bytes]) -> None:
    openai = pytest.importorskip("openai")
    env = {"MODEL": MODEL, "WEIGHTS_PATH": str(tiny_pipeline_dir), "MAX_WAIT_MS": "0"}
    env["RESULT_CACHE_MB"] = "0"  # both front doors compute, neither serves the other's result
    with inference_server({**env, **ONE_THREAD}) as url:
        assert httpx.get(f"{url}/").json()["model"] == f"watermarked:{tiny_pipeline_dir}"
        response = httpx.post(f"{url}/predict", json=REQUEST, timeout=120)
        assert response.status_code == 200, response.text
        assert [base64.b64decode(i["data"]) for i in response.json()["images"]] == expected
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        extensions = {"seed": REQUEST["seed"], "steps": REQUEST["steps"]}
        result = client.images.generate(
            prompt=REQUEST["prompt"], n=2, size="64x64", extra_body=extensions
        )
        assert [base64.b64decode(item.b64_json) for item in result.data] == expected


def test_the_cli_predict_and_batch_commands(
    tiny_pipeline_dir: Path, expected: list[bytes], tmp_path: Path, one_thread: None
) -> None:
    flags = ["--model", MODEL, "--weights-path", str(tiny_pipeline_dir)]
    request = ["--prompt", REQUEST["prompt"], "--seed", "77", "--steps", "3", "--num-outputs", "2"]
    out = tmp_path / "fox.png"
    assert cli.main(["predict", *flags, *request, "-q", "-o", str(out)]) == 0
    assert [(tmp_path / f"fox-{i}.png").read_bytes() for i in (0, 1)] == expected
    lines = tmp_path / "requests.jsonl"
    lines.write_text(json.dumps(REQUEST) + "\n")
    assert cli.main(["batch", str(lines), "--output-dir", str(tmp_path / "out"), "-q", *flags]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.jsonl").read_text())
    assert manifest["status"] == "ok"
    assert [(tmp_path / "out" / name).read_bytes() for name in manifest["outputs"]] == expected


def test_cogs_predictor_class(
    tiny_pipeline_dir: Path,
    expected: list[bytes],
    monkeypatch: pytest.MonkeyPatch,
    one_thread: None,
) -> None:
    pytest.importorskip("cog")
    from cog import Path as CogPath

    import predict

    monkeypatch.setenv("MODEL", MODEL)
    monkeypatch.setenv("MAX_WAIT_MS", "0")
    predictor = predict.Predictor()
    predictor.setup(weights=CogPath(str(tiny_pipeline_dir)))  # Cog's weights: WEIGHTS_PATH here
    try:
        inputs = {**predict_defaults(), **REQUEST}
        paths = asyncio.run(predictor.predict(**inputs))
        assert [path.read_bytes() for path in paths] == expected
    finally:
        predictor.service.stop()


def test_modals_class_local(
    tiny_pipeline_dir: Path,
    expected: list[bytes],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    one_thread: None,
) -> None:
    pytest.importorskip("modal")
    for name in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "no-modal.toml"))
    for name, value in (("MODEL", MODEL), ("WEIGHTS_PATH", str(tiny_pipeline_dir))):
        monkeypatch.setenv(name, value)  # what CONTAINER_ENV carries to the container
    monkeypatch.setenv("MAX_WAIT_MS", "0")
    import deploy

    obj = deploy.Model()
    try:
        result = obj.generate.local(dict(REQUEST))  # runs both @modal.enter hooks
        assert [image["data"] for image in result["images"]] == expected
    finally:
        obj.web.local().state.service.stop()


def test_modals_image_carries_the_package_model_names(tmp_path: Path) -> None:
    """The package of MODEL=package.module:Class is shipped next to inference/, with any
    MODAL_PYTHON_SOURCES; a hub id adds nothing."""
    pytest.importorskip("modal")
    from tests.test_modal import run_deploy

    code = "print(json.dumps(deploy.PYTHON_SOURCES))"
    for env, expected in (
        ({"MODEL": MODEL}, ["examples"]),
        ({"MODEL": MODEL, "MODAL_PYTHON_SOURCES": "tools,inference"}, ["examples", "tools"]),
        ({"MODEL": "stabilityai/sd-turbo"}, []),
    ):
        process = run_deploy(code, env, tmp_path)
        assert process.returncode == 0, process.stderr
        assert json.loads(process.stdout.strip().splitlines()[-1]) == expected
