"""Image-to-image and inpainting in-process: the mock's documented formula computed by hand,
batch independence, and the validation of image requests (sizes, masks, strength, limits)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from inference.codec import decode
from inference.errors import InvalidRequest, PayloadTooLarge
from inference.models.mock import NoiseDrawer, prompt_pattern
from inference.schema import GenerateRequest, Job
from inference.service import Service
from tests.conftest import make_service

F32 = np.float32
GAMMA, BETA = 0.82, 0.15


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def photo(height: int = 64, width: int = 96, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def half_mask(height: int = 64, width: int = 96) -> np.ndarray:
    """White (repaint) on the left half, black (keep) on the right."""
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[:, : width // 2] = 255
    return mask


def by_hand(
    image: np.ndarray,
    *,
    seed: int,
    strength: float,
    steps: int,
    prompt: str = "",
    weight: float = 1.0,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """The README's formula for the mock, step by step in numpy float32."""
    height, width = image.shape[:2]
    a = (image.transpose(2, 0, 1).astype(F32) - F32(128)) * F32(1 / 64)
    generator = torch.Generator().manual_seed(seed)
    drawer, buffer = NoiseDrawer((3, height, width)), torch.empty(3, height, width)

    def eps() -> np.ndarray:
        drawer.draw(generator, buffer)
        return buffer.numpy().copy()

    drift = (prompt_pattern(prompt, height, width) - prompt_pattern("", height, width)).numpy()
    drift = drift * F32((1 - GAMMA) * weight)
    keep = None if mask is None else (mask < 128)[None]
    runs = int(steps * strength)
    x = a * F32(1 - strength) + eps() * F32(strength)
    if keep is not None:
        x = np.where(keep, a, x)
    for k in range(1, runs + 1):
        t = steps - runs + k
        sigma = 1 - 0.5 * (t - 1) / max(steps - 1, 1)
        x = x * F32(GAMMA) + drift + eps() * F32(BETA * sigma)
        if keep is not None:
            x = np.where(keep, a, x)
    return np.floor(np.clip(x * F32(64) + F32(128), 0, 255)).astype(np.uint8).transpose(1, 2, 0)


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    svc = make_service(max_wait_ms=0)
    yield svc
    svc.stop()


def pixels_of(service: Service, request: dict[str, Any]) -> list[np.ndarray]:
    return [decode(image.data) for image in service.generate(request).images]


# -- the mock's formula -----------------------------------------------------------------------


def test_image_to_image_follows_the_documented_formula(service: Service) -> None:
    image = photo()
    request = {"prompt": "a fox", "seed": 3, "steps": 10, "strength": 0.6, "prompt_weight": 2.0}
    (out,) = pixels_of(service, {**request, "image": png(image)})
    expected = by_hand(image, seed=3, strength=0.6, steps=10, prompt="a fox", weight=2.0)
    assert np.array_equal(out, expected)
    assert not np.array_equal(out, image)


def test_inpainting_follows_the_formula_and_keeps_unmasked_pixels(service: Service) -> None:
    image, mask = photo(seed=1), half_mask()
    request = {"seed": 5, "steps": 8, "strength": 0.9, "image": png(image), "mask": png(mask)}
    first, second = pixels_of(service, {**request, "num_outputs": 2})
    assert np.array_equal(first, by_hand(image, seed=5, strength=0.9, steps=8, mask=mask))
    assert np.array_equal(second, by_hand(image, seed=6, strength=0.9, steps=8, mask=mask))
    for out in (first, second):
        assert np.array_equal(out[:, 48:], image[:, 48:])  # kept: exactly the sent pixels
        assert not np.array_equal(out[:, :48], image[:, :48])  # repainted


def test_strength_0_returns_the_image_and_1_is_text_to_image(service: Service) -> None:
    image = photo(seed=2)
    (kept,) = pixels_of(service, {"seed": 1, "steps": 5, "image": png(image), "strength": 0})
    assert np.array_equal(kept, image)
    common = {"prompt": "a whale", "seed": 9, "steps": 6, "width": 96, "height": 64}
    (ignored,) = pixels_of(service, {**common, "image": png(image), "strength": 1})
    (text,) = pixels_of(service, common)
    assert np.array_equal(ignored, text)


def test_an_image_depends_on_its_bytes_and_seed_not_its_batch(service: Service) -> None:
    """Jobs of one batch (different images, masks-free, seeds) equal their solo runs."""
    model = service.model
    jobs = [
        service.job({"seed": seed, "steps": 6, "strength": 0.7, "image": png(photo(seed=seed))})
        for seed in (1, 2, 3)
    ]
    jobs.append(
        service.job(
            {"seed": 4, "steps": 6, "strength": 0.7, "num_outputs": 2, "image": png(photo())}
        )
    )
    assert len({model.batch_key(job) for job in jobs}) == 1
    together = model.generate(jobs)
    for job, images in zip(jobs, together, strict=True):
        alone = model.generate([job])[0]
        assert all(np.array_equal(a, b) for a, b in zip(images, alone, strict=True))
    masked = [
        service.job({"seed": s, "steps": 4, "image": png(photo(seed=s)), "mask": png(half_mask())})
        for s in (7, 8)
    ]
    both = model.generate(masked)
    assert all(np.array_equal(both[i][0], model.generate([masked[i]])[0][0]) for i in (0, 1))


def test_batch_key_separates_modes_and_strengths(service: Service) -> None:
    base = {"seed": 1, "steps": 4, "width": 96, "height": 64}
    keys = {
        service.model.batch_key(service.job(request))
        for request in (
            base,
            {**base, "image": png(photo())},
            {**base, "image": png(photo()), "strength": 0.5},
            {**base, "image": png(photo()), "mask": png(half_mask())},
        )
    }
    assert len(keys) == 4
    other_image = service.job({**base, "image": png(photo(seed=9))})
    assert service.model.batch_key(other_image) == service.model.batch_key(
        service.job({**base, "image": png(photo())})
    )


# -- validation -------------------------------------------------------------------------------


def test_a_job_carries_fitted_pixels_and_a_content_digest(service: Service) -> None:
    image = photo(75, 100)
    job = service.job({"image": png(image), "seed": 1})  # its own size, to multiples of 8
    assert (job.width, job.height, job.mode, job.strength) == (96, 72, "image-to-image", 0.8)
    assert job.image is not None and job.image.pixels.shape == (72, 96, 3)
    again = service.job({"image": png(image), "seed": 1})
    assert job == again and hash(job) == hash(again)  # hashable, equal by content
    other = service.job({"image": png(photo(75, 100, seed=1)), "seed": 1})
    assert other.image != job.image
    sized = service.job({"image": png(image), "width": 64, "height": 64, "seed": 1})
    assert sized.image is not None and sized.image.pixels.shape == (64, 64, 3)
    text = service.job({"seed": 1})
    assert (text.mode, text.image, text.strength, text.mask) == ("text-to-image", None, None, None)
    masked = service.job({"image": png(image), "mask": png(half_mask(75, 100)), "seed": 1})
    assert masked.mode == "inpainting" and masked.mask is not None
    assert set(np.unique(masked.mask.pixels)) == {0, 255}


def test_an_image_request_with_width_only_uses_the_default_height(service: Service) -> None:
    job = service.job({"image": png(photo()), "width": 128, "seed": 1})
    assert (job.width, job.height) == (128, 256)  # as for text-to-image: omitted = default


@pytest.mark.parametrize(
    ("request_fields", "field", "message"),
    [
        (
            {"mask": "MASK"},
            "mask",
            "mask needs an image (mask says which of its pixels to repaint)",
        ),
        ({"strength": 0.5}, "strength", "strength needs an image"),
        ({"prompt_strength": 0.5}, "strength", "strength needs an image"),
        (
            {"image": "IMAGE", "mask": "SMALL_MASK"},
            "mask",
            "mask is 48x32 but image is 96x64; send a mask of the image's size",
        ),
        ({"image": "IMAGE", "strength": 1.01}, "strength", "less than or equal to 1"),
        ({"image": "IMAGE", "width": 2048}, "width", "MAX_WIDTH"),
    ],
)
def test_bad_image_requests_name_the_field(
    service: Service, request_fields: dict[str, Any], field: str, message: str
) -> None:
    files = {"IMAGE": png(photo()), "MASK": png(half_mask()), "SMALL_MASK": png(half_mask(32, 48))}
    request = {name: files.get(value, value) for name, value in request_fields.items()}
    with pytest.raises(InvalidRequest) as info:
        service.job(request)
    assert info.value.field in (field, "prompt_strength")
    assert message in info.value.message


def test_an_image_over_max_image_bytes_is_too_large() -> None:
    service = make_service(max_image_bytes=2048)
    try:
        with pytest.raises(PayloadTooLarge) as info:
            service.job({"image": png(photo())})  # ~9 KB of noise
        assert info.value.field == "image"
        assert "more than this server takes (MAX_IMAGE_BYTES=2048)" in info.value.message
        flat = png(np.zeros((64, 96, 3), dtype=np.uint8))  # a few hundred bytes: accepted
        assert service.job({"image": flat}).image is not None
    finally:
        service.stop()


def test_requests_without_images_are_exactly_text_to_image(service: Service) -> None:
    """The quick-start request keeps its bytes (test_mock pins its pixels) and its Job."""
    job = service.job(GenerateRequest(seed=42, prompt_weight=0.7))
    assert job == Job(
        prompt="",
        negative_prompt="",
        seeds=(42,),
        prompt_weight=0.7,
        steps=20,
        width=256,
        height=256,
        output_format="png",
    )
