"""Previews of a running batch: the engine's optional hook beside per-request progress.

The model offers a preview by accepting ``generate(..., preview=...)``; the engine hands each
caller that asked a ``render`` of its own images, rendered at most once per step and only when
asked. Models written without the hook keep working, and a broken preview never fails a batch.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from inference.codec import decode
from inference.models.base import PreviewCallback, ProgressCallback
from inference.models.diffusers.previews import LatentPreviewer
from inference.models.mock import MockModel
from inference.schema import GenerateRequest, Job
from inference.service import Service
from inference.settings import Settings
from tests.fakes import GatedModel

SMALL = {"width": 64, "height": 64, "steps": 4, "prompt": "a red fox"}


class CountingPreviews(MockModel):
    """The mock, counting the previews actually rendered; a call waits for ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.renders = 0
        self.gate, self.entered = threading.Event(), threading.Event()
        self.gate.set()

    def generate(
        self,
        jobs: Sequence[Job],
        progress: ProgressCallback | None = None,
        preview: PreviewCallback | None = None,
    ) -> list[list[np.ndarray]]:
        self.entered.set()
        self.gate.wait(10)
        if preview is None:
            return super().generate(jobs, progress)

        def counted(step: int, total: int, render: Callable[[], list]) -> None:
            def counting_render() -> list:
                self.renders += 1
                return render()

            preview(step, total, counting_render)

        return super().generate(jobs, progress, counted)


def started(model: MockModel, **settings: object) -> Service:
    return Service(model, Settings(**settings)).start()


def test_the_mocks_preview_is_its_state_mapped_to_pixels_and_its_last_is_the_image() -> None:
    service = started(MockModel(), max_wait_ms=0)
    previews: dict[int, list[np.ndarray]] = {}
    progress: list[tuple[int, int]] = []

    def keep(step: int, total: int, render: Callable[[], list[np.ndarray]]) -> None:
        previews[step] = render()

    result = service.generate(
        GenerateRequest(**SMALL, seed=3, num_outputs=2),
        progress=lambda step, total: progress.append((step, total)),
        preview=keep,
    )
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]  # the progress signature is unchanged
    assert sorted(previews) == [1, 2, 3, 4]
    model = service.engine.model
    final = [model.generate([service.job(GenerateRequest(**SMALL, seed=s))])[0][0] for s in (3, 4)]
    assert [decode(i.data).tolist() for i in result.images] == [f.tolist() for f in final]
    assert [p.tolist() for p in previews[4]] == [f.tolist() for f in final]
    assert all(p.shape == (64, 64, 3) and p.dtype == np.uint8 for p in previews[1])
    assert not np.array_equal(previews[1][0], previews[4][0])  # the state moves on
    service.stop()


def test_each_caller_gets_its_own_images_and_a_step_renders_once() -> None:
    model = CountingPreviews()
    service = started(model, max_wait_ms=200, max_batch_size=8)
    seen: dict[int, list[np.ndarray]] = {}

    def watcher(seed: int) -> Callable[[int, int, Callable[[], list[np.ndarray]]], None]:
        def watch(step: int, total: int, render: Callable[[], list[np.ndarray]]) -> None:
            if step == total:
                seen[seed] = render()

        return watch

    async def together() -> list:
        model.gate.clear()
        model.entered.clear()
        first = asyncio.ensure_future(service.submit(GenerateRequest(**SMALL, seed=1)))
        await asyncio.to_thread(model.entered.wait, 5)
        batch = asyncio.gather(
            service.submit(GenerateRequest(**SMALL, seed=5), preview=watcher(5)),
            service.submit(GenerateRequest(**SMALL, seed=9), preview=watcher(9)),
            service.submit(GenerateRequest(**SMALL, seed=2)),  # asks for none
        )
        await asyncio.sleep(0.1)
        model.gate.set()
        return [await first, *await batch]

    results = asyncio.run(together())
    assert results[1].batch_size == 3  # seeds 5, 9 and 2 shared a call
    assert model.renders == 1  # two callers looked at the last step: one render
    for seed, result in zip((5, 9), results[1:3], strict=True):
        assert seen[seed][0].tolist() == decode(result.images[0].data).tolist()
    service.stop()


def test_a_model_without_the_hook_still_serves_callers_that_ask_for_previews() -> None:
    model = GatedModel()  # generate(jobs, progress): written before previews existed
    service = started(model, max_wait_ms=0)
    assert service.engine.previews is False
    asked: list[int] = []
    result = service.generate(
        GenerateRequest(**SMALL, seed=1), preview=lambda step, total, render: asked.append(step)
    )
    assert result.seed == 1 and asked == []
    service.stop()


def test_a_broken_render_or_preview_listener_never_fails_the_batch() -> None:
    class BrokenRender(MockModel):
        def generate(self, jobs, progress=None, preview=None):  # type: ignore[no-untyped-def]
            def broken(step: int, total: int, render: Callable[[], list]) -> None:
                assert preview is not None
                preview(step, total, lambda: 1 / 0)

            return super().generate(jobs, progress, broken if preview else None)

    service = started(BrokenRender(), max_wait_ms=0)
    result = service.generate(
        GenerateRequest(**SMALL, seed=1), preview=lambda step, total, render: render()
    )

    def raising(step: int, total: int, render: Callable[[], list]) -> None:
        raise RuntimeError("a listener's bug")

    assert result.seed == 1
    assert service.generate(GenerateRequest(**SMALL, seed=2), preview=raising).seed == 2
    assert service.engine.stats.failed_batches == 0
    service.stop()


class LinearVAE(torch.nn.Module):
    """A VAE whose encoder is affine per pixel, so a linear preview can be exact."""

    config = SimpleNamespace(scaling_factor=0.5, shift_factor=0.25)

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.weight = torch.nn.Parameter(torch.randn(4, 3, generator=generator))
        self.bias = torch.nn.Parameter(torch.randn(4, generator=generator))

    def encode(self, images: torch.Tensor) -> SimpleNamespace:
        z = self.latents((images + 1.0) / 2.0)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=z))

    def latents(self, rgb: torch.Tensor) -> torch.Tensor:
        """What the VAE's encoder makes of ``rgb`` in [0, 1]."""
        return torch.einsum("nchw,lc->nlhw", rgb, self.weight) + self.bias[:, None, None]


def test_the_latent_preview_inverts_a_vae_it_can_fit_exactly() -> None:
    """The fit works in the pipeline's latent space: (z - shift) x scale, as SD3 and SD use."""
    vae = LinearVAE()
    rgb = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        latents = (vae.latents(rgb) - 0.25) * 0.5  # what the denoising loop holds
    previews = LatentPreviewer(SimpleNamespace(vae=vae)).render(latents, 16, 24)
    assert previews is not None and len(previews) == 2
    expected = (rgb.permute(0, 2, 3, 1).numpy() * 255).round()
    for preview, image in zip(previews, expected, strict=True):
        assert preview.shape == (24, 16, 3) and preview.dtype == np.uint8
        assert np.abs(preview[::3, ::2].astype(float) - image).max() <= 1  # 3x2 blocks


def test_no_preview_from_latents_it_cannot_read() -> None:
    previewer = LatentPreviewer(SimpleNamespace(vae=None))  # no VAE to fit on
    assert previewer.render(torch.zeros(1, 4, 8, 8), 64, 64) is None
    packed = torch.zeros(1, 64, 16)  # FLUX packs latents into tokens
    assert LatentPreviewer(SimpleNamespace(vae=LinearVAE())).render(packed, 64, 64) is None


@pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
def test_diffusers_previews_reach_the_caller_at_every_step(tiny_pipeline_dir: Path) -> None:
    """Through callback_on_step_end, each job's images at its size (the tiny pipeline's random
    VAE is no autoencoder, so what they look like is tested above, on a VAE that is one)."""
    service = Service.from_settings(Settings(model=str(tiny_pipeline_dir), max_wait_ms=0))
    service.start()
    previews: dict[int, list[np.ndarray]] = {}
    result = service.generate(
        GenerateRequest(prompt="a lighthouse", seed=4, steps=3, num_outputs=2),
        preview=lambda step, total, render: previews.__setitem__(step, render()),
    )
    assert result.seed == 4 and sorted(previews) == [1, 2, 3]
    assert all(len(p) == 2 for p in previews.values())
    assert all(i.shape == (64, 64, 3) and i.dtype == np.uint8 for i in previews[3])
    assert not np.array_equal(previews[1][0], previews[3][0])
    service.stop()
