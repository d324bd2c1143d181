"""Image-to-image and inpainting on the tiny random Stable Diffusion pipeline: pipelines derived
with ``from_pipe`` share the loaded weights, batches equal solo runs, and what a model cannot do
is refused naming the field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers")

from inference.errors import InvalidRequest
from inference.models.diffusers import DiffusersModel
from inference.service import Service
from inference.settings import Settings
from tests.test_img2img import half_mask, photo, png

#: diffusers' schedulers call np.array() on tensors; numpy 2 warns about it on every call.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
#: uint8 levels a batched image may differ from its solo run (float rounding in batched matmuls).
BATCH_TOLERANCE = 2
IMAGE = {"prompt": "a red cat", "steps": 4, "width": 64, "height": 64, "strength": 0.75}


@pytest.fixture(scope="module")
def service(tiny_pipeline_dir: Path) -> Iterator[Service]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared machine: one thread is fastest
    settings = Settings(
        model=str(tiny_pipeline_dir),
        max_wait_ms=0,
        result_cache_mb=0,  # a repeated seeded request must reach the pipeline, not the cache
    )
    svc = Service.from_settings(settings).start()
    yield svc
    svc.stop()
    torch.set_num_threads(threads)


def request(seed: int, mask: bool = False, **fields: Any) -> dict[str, Any]:
    files = {"image": png(photo(64, 64, seed=seed))}
    if mask:
        files["mask"] = png(half_mask(64, 64))
    return {**IMAGE, "seed": seed, **files, **fields}


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def test_derived_pipelines_share_the_loaded_weights(service: Service) -> None:
    model = service.model
    assert isinstance(model, DiffusersModel)
    for mode, name in (
        ("image-to-image", "StableDiffusionImg2ImgPipeline"),
        ("inpainting", "StableDiffusionInpaintPipeline"),
    ):
        derived = model.pipeline(mode)
        assert type(derived).__name__ == name
        assert model.pipeline(mode) is derived  # built once
        for component in ("unet", "vae", "text_encoder", "tokenizer"):
            assert getattr(derived, component) is getattr(model.pipe, component), component
        own = {p.data_ptr() for p in model.pipe.unet.parameters()}
        assert {p.data_ptr() for p in derived.unet.parameters()} == own  # no copy in memory


def test_both_modes_generate_and_follow_the_image(service: Service) -> None:
    text = service.generate({**IMAGE, "seed": 3, "strength": None})
    light = service.generate(request(3, strength=0.5))
    heavy = service.generate(request(3, strength=1.0))
    inpainted = service.generate(request(3, mask=True))
    sizes = {(i.width, i.height) for r in (text, light, heavy, inpainted) for i in r.images}
    assert sizes == {(64, 64)}
    outputs = [r.images[0].data for r in (text, light, heavy, inpainted)]
    assert len(set(outputs)) == 4  # mode and strength each change the image
    calls = service.engine.stats.model_calls
    again = service.generate(request(3, mask=True))
    assert again.cache is None and service.engine.stats.model_calls == calls + 1  # really ran again
    assert again.images[0].data == inpainted.images[0].data  # same bytes and seed: same image


@pytest.mark.parametrize("mask", [False, True])
def test_a_batch_equals_its_solo_runs(service: Service, mask: bool) -> None:
    from inference.codec import decode

    model = service.model
    jobs = [service.job(request(seed, mask=mask)) for seed in (1, 2)]
    jobs.append(service.job(request(5, mask=mask, num_outputs=2)))
    assert len({model.batch_key(job) for job in jobs}) == 1
    together = model.generate(jobs)
    for job, images in zip(jobs, together, strict=True):
        alone = model.generate([job])[0]
        for a, b in zip(images, alone, strict=True):
            assert a.shape == (64, 64, 3) and max_diff(a, b) <= BATCH_TOLERANCE
    assert decode(service.generate(request(1, mask=mask)).images[0].data).shape == (64, 64, 3)


def test_strength_that_runs_no_step_is_refused(service: Service) -> None:
    with pytest.raises(InvalidRequest) as info:
        service.job(request(1, steps=2, strength=0.4))
    assert info.value.field == "strength"
    assert "strength 0.4 with 2 steps runs no denoising step" in info.value.message
    assert "raise strength to at least 0.5 or raise steps" in info.value.message


def test_a_model_without_such_pipelines_refuses_naming_the_field(tiny_pipeline_dir: Path) -> None:
    """A pipeline class diffusers' AutoPipelines do not know (a community pipeline)."""
    model = DiffusersModel(str(tiny_pipeline_dir))
    model.load()
    model.pipe.__class__ = type("MyCommunityPipeline", (type(model.pipe),), {})
    service = Service(model, Settings(max_wait_ms=0))
    for mask, field in ((False, "image"), (True, "mask")):
        with pytest.raises(InvalidRequest) as info:
            service.job(request(1, mask=mask))
        assert info.value.field == field
        assert f"(MyCommunityPipeline) has no {'inpainting' if mask else 'image-to-image'}" in (
            info.value.message
        )
        assert info.value.message.endswith(f"omit {field}")
    service.job({**IMAGE, "seed": 1, "strength": None})  # text-to-image still runs
