"""Safety checkers, honestly: kept or disabled by SAFETY_CHECKER, and a flagged image reported
as flagged (``nsfw`` per image, X-NSFW, Cog leaving it out) instead of a silent black square.

The tiny pipeline ships no checker, so the tests attach a stub the way a Stable Diffusion 1.x
checkpoint carries one: a ``safety_checker`` and its ``feature_extractor``, called by the
pipeline after decoding, blacking out the images it flags.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest

pytest.importorskip("diffusers")

import torch

import inference.models.diffusers as diffusers_backend
from inference.codec import decode
from inference.http.app import create_app
from inference.results import ALL_FLAGGED
from inference.service import Service
from inference.settings import Settings
from tests.cog_inputs import predict_defaults
from tests.conftest import make_service
from tests.servers import serving_in_thread

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
REQUEST: dict[str, Any] = {"prompt": "a lighthouse", "seed": 5, "steps": 2, "num_outputs": 2}


class StubFeatureExtractor:
    def __call__(self, images: list[Any], return_tensors: str = "pt") -> Any:
        pixels = torch.zeros(len(images), 3, 8, 8)
        return SimpleNamespace(to=lambda device: SimpleNamespace(pixel_values=pixels))


class StubSafetyChecker:
    """Flags the images at ``flagged`` positions of each batch, and blacks them out."""

    def __init__(self) -> None:
        self.flagged: set[int] = {1}
        self.calls = 0

    def __call__(self, images: torch.Tensor, clip_input: torch.Tensor) -> tuple[Any, list[bool]]:
        self.calls += 1
        flags = [i in self.flagged for i in range(len(images))]
        for i, flag in enumerate(flags):
            if flag:
                images[i] = torch.zeros_like(images[i])
        return images, flags


@pytest.fixture
def checker(monkeypatch: pytest.MonkeyPatch) -> StubSafetyChecker:
    """Every pipeline loaded during the test carries the stub checker."""
    stub = StubSafetyChecker()
    load = diffusers_backend.load_pipeline

    def with_checker(*args: Any, **kwargs: Any) -> Any:
        pipe = load(*args, **kwargs)
        pipe.feature_extractor = StubFeatureExtractor()
        pipe.safety_checker = stub
        return pipe

    monkeypatch.setattr(diffusers_backend, "load_pipeline", with_checker)
    return stub


def test_a_kept_checker_reports_each_flagged_image(
    tiny_pipeline_dir: Path, checker: StubSafetyChecker
) -> None:
    service = Service.from_settings(Settings(model=str(tiny_pipeline_dir), max_wait_ms=0))
    service.start()
    assert service.info()["safety_checker"] == "kept"
    previews: list[int] = []
    result = service.generate(REQUEST, preview=lambda step, total, render: previews.append(step))
    assert checker.calls >= 1
    assert [image.nsfw for image in result.images] == [False, True]
    assert not decode(result.images[1].data).any()  # the checker's black square, flagged
    assert decode(result.images[0].data).any()
    assert previews == []  # a preview would show what the checker has not judged
    with serving_in_thread(create_app(service.settings, service)) as url:
        body = httpx.post(f"{url}/predict", json={**REQUEST, "seed": 8}, timeout=60).json()
        assert [image["nsfw"] for image in body["images"]] == [False, True]
        single = {**REQUEST, "num_outputs": 1}
        raw = httpx.post(f"{url}/predict", json=single, headers={"accept": "image/png"})
        assert raw.headers["x-nsfw"] == "false"
        assert httpx.get(f"{url}/").json()["safety_checker"] == "kept"
    service.stop()


def test_disabling_the_checker_is_the_deployments_choice(
    tiny_pipeline_dir: Path, checker: StubSafetyChecker
) -> None:
    settings = Settings(model=str(tiny_pipeline_dir), max_wait_ms=0, safety_checker="disable")
    service = Service.from_settings(settings).start()
    try:
        assert service.info()["safety_checker"] == "disabled"
        assert service.model.pipe.safety_checker is None
        result = service.generate(REQUEST)
    finally:
        service.stop()
    assert checker.calls == 0
    assert [image.nsfw for image in result.images] == [None, None]
    assert decode(result.images[1].data).any()  # not blacked out


def test_a_pipeline_or_the_mock_without_a_checker_says_so(tiny_pipeline_dir: Path) -> None:
    mock = make_service()
    assert mock.info()["safety_checker"] == "none"
    assert mock.generate({"steps": 2, "width": 64, "height": 64}).images[0].nsfw is None
    mock.stop()
    plain = diffusers_backend.DiffusersModel(str(tiny_pipeline_dir))
    plain.load()
    assert plain.safety_checker == "none"


def test_cog_leaves_flagged_images_out_and_fails_when_none_is_left(
    tiny_pipeline_dir: Path, checker: StubSafetyChecker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As Replicate's own Stable Diffusion predictors do."""
    pytest.importorskip("cog")
    from cog import Path as CogPath

    import predict

    monkeypatch.setenv("MAX_WAIT_MS", "0")
    predictor = predict.Predictor()
    predictor.setup(weights=CogPath(str(tiny_pipeline_dir)))
    inputs = {**predict_defaults(), **REQUEST}
    try:
        paths = asyncio.run(predictor.predict(**inputs))
        assert [p.name for p in paths] == ["out-0.png"]
        assert np.asarray(decode(paths[0].read_bytes())).any()
        checker.flagged = {0, 1}
        with pytest.raises(RuntimeError, match=re.escape(ALL_FLAGGED)):
            asyncio.run(predictor.predict(**{**inputs, "seed": 6}))
    finally:
        predictor.service.stop()
