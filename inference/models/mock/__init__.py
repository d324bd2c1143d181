"""The embedded default model: a tiny deterministic diffusion-style sampler.

It needs no download, runs on any CPU, and behaves like a real sampler where it matters for
serving: cost grows with steps x pixels, the seed fixes the noise, and ``prompt_weight`` pulls
the image toward a pattern derived from the prompt. Update rule, for t = 1..T:

    x_0 = eps_0
    D   = P(prompt) - P(negative_prompt)
    x_t = gamma * x_{t-1} + (1 - gamma) * w * D + beta * sigma_t * eps_t
    sigma_t = 1 - 0.5 * (t - 1) / max(T - 1, 1)
    pixel = clip(floor(64 * x_T + 128), 0, 255)

A preview at step t (OpenAI's streamed partial images) is the same pixel map applied to x_t.

eps_t ~ N(0, I) of shape 3 x H x W: each value is Q[k], with k uniform in 0..32767, and Q[k]
the standard normal quantile at (k + 0.5) / 32768 in float32. The k come from a CPU generator
seeded with the image's seed: ``random_()`` fills int32 values with 31 random bits, and each
value's two 16-bit halves (little-endian), masked to 15 bits, are two k. ``torch.randn`` would be
simpler, but its CPU kernel takes a different code path on AVX2 than on other CPUs (ARM, or
without AVX2), so the same seed would give other bytes on another machine; integer draws, bit
masks and a table lookup are exact everywhere, and cost less than ``randn``.

P(text) is a 3 x H x W pattern in [-1, 1] of triangle waves whose frequencies and phases come
from SHA-256(text); P("") = 0, so w = 0 or an empty prompt gives a prompt-independent image.
Every other operation is an exactly rounded elementwise op (no transcendental functions,
no fused multiply-add), so an image's bytes depend neither on the batch it was computed in nor
on the machine.

Image-to-image and inpainting (a job with an init image I, already H x W, and strength s) start
from the image instead of pure noise and run only the last K steps, as diffusers does:

    a   = (I - 128) / 64                          the image in sampler space: pixel(a) = I exactly
    K   = floor(T * s)                            steps run (T * s in float64)
    x_0 = (1 - s) * a + s * eps_0
    x_k = gamma * x_{k-1} + (1 - gamma) * w * D + beta * sigma_{T-K+k} * eps_k   for k = 1..K
    inpainting, M = 1 where the mask repaints:  x_k <- M ? x_k : a   for k = 0..K (a selection)
    pixel = clip(floor(64 * x_K + 128), 0, 255)

Scalars are computed in float64 and each product and sum rounded to float32, in that order.
So s = 0 returns the image unchanged, s = 1 without a mask gives the text-to-image result for
the same seed, and a pixel the mask keeps comes back exactly as it was sent.

LoRA adapters (issue 16): a mock adapter is a safetensors file holding one or both of the
single-number tensors ``lora.gamma`` and ``lora.beta``, deltas to the weights. A job with
adapters (r_i, s_i) runs with

    gamma' = gamma + sum_i s_i * lora.gamma_i      beta' = beta + sum_i s_i * lora.beta_i

(Python floats, in request order; an absent key is 0), which must keep 0 <= gamma' < 1 and
beta' >= 0. Scale 0 gives exactly the base weights, so the whole adapter path (references,
download, cache, batching) is testable offline with exact expected pixels. Any other tensor, or
one that is not a single number, "does not fit" the mock, like an SDXL LoRA on SD 1.5.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
from collections.abc import Hashable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from inference.errors import InvalidRequest
from inference.lora.support import Adapters
from inference.models.base import PreviewCallback, ProgressCallback, SafetyChecker, per_job
from inference.models.mock.mock_lora import read_mock_adapter
from inference.models.mock.mock_weights import load_weights
from inference.schema import Defaults, Job
from inference.settings import Settings

log = logging.getLogger(__name__)

NOISE_LEVELS = 1 << 15  # a power of two: k is a bit mask of a random integer


@lru_cache(maxsize=1)
def normal_quantiles() -> torch.Tensor:
    """Q[k] = the standard normal quantile at (k + 0.5) / NOISE_LEVELS, as float32.

    Computed once in float64 by Python's own arithmetic, so every machine builds the same table.
    """
    normal = statistics.NormalDist()
    levels = [normal.inv_cdf((k + 0.5) / NOISE_LEVELS) for k in range(NOISE_LEVELS)]
    return torch.tensor(levels, dtype=torch.float64).to(torch.float32)


class NoiseDrawer:
    """Fills tensors of one shape with N(0, 1) noise; see the module docstring for how and why.

    Holds the scratch integers, so a sampling loop allocates nothing per step.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        numel = int(np.prod(shape))
        if numel % 2:
            raise ValueError(f"noise needs an even number of values, got shape {shape}")
        self.bits = torch.empty(numel // 2, dtype=torch.int32)
        self.index = torch.empty(numel, dtype=torch.int32)

    def draw(self, generator: torch.Generator, out: torch.Tensor) -> None:
        """Fill the contiguous ``out`` from ``generator``."""
        self.bits.random_(generator=generator)  # [0, 2^31): 31 random bits each
        torch.bitwise_and(self.bits.view(torch.int16), NOISE_LEVELS - 1, out=self.index)
        torch.index_select(normal_quantiles(), 0, self.index, out=out.view(-1))


# Each pattern is 3 x H x W float32 (12 MB at 1024^2): a few entries cover the prompts a batch
# or a burst of retries repeats, without letting unique prompts grow memory.
@lru_cache(maxsize=8)
def prompt_pattern(text: str, height: int, width: int) -> torch.Tensor:
    """A deterministic 3 x H x W pattern in [-1, 1] for ``text`` (zeros for the empty text)."""
    if not text:
        return torch.zeros(3, height, width)
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    v = torch.arange(height, dtype=torch.float32).mul_(1.0 / height).view(1, height, 1)
    u = torch.arange(width, dtype=torch.float32).mul_(1.0 / width).view(1, 1, width)
    channels = []
    for c in range(3):
        waves = []
        for k in range(2):
            b = digest[8 * c + 4 * k : 8 * c + 4 * k + 4]
            fx, fy = float(b[0] % 7 - 3), float(b[1] % 7 - 3)  # cycles across the image
            if fx == fy == 0.0:
                fx = 1.0
            phase = b[2] / 256.0
            t = (u * fx + v * fy + phase).squeeze(0)  # separate mul/add: exactly rounded
            waves.append((t - t.floor() - 0.5).abs_().mul_(4.0).sub_(1.0))  # triangle wave
        channels.append((waves[0] + waves[1]).mul_(0.5))
    return torch.stack(channels)


class MockModel:
    """The deterministic CPU sampler described in the module docstring."""

    name = "mock"
    size_multiple = 8
    #: A sampler of noise and patterns: there is nothing for a safety checker to judge.
    safety_checker: SafetyChecker = "none"

    def __init__(self, weights_path: Path | None = None, settings: Settings | None = None) -> None:
        self.weights_path = weights_path
        self.weights: dict[str, float] | None = None
        self.adapters = Adapters(settings or Settings())

    @classmethod
    def from_settings(cls, settings: Settings) -> MockModel:
        return cls(weights_path=settings.weights_path, settings=settings)

    @property
    def defaults(self) -> Defaults:
        return Defaults(steps=20, prompt_weight=1.0, width=256, height=256)

    @property
    def revision(self) -> str | None:
        """The loaded weights' digest: other weights, other images (the result cache's key)."""
        if self.weights is None:
            return None
        text = json.dumps(self.weights, sort_keys=True).encode()
        return hashlib.sha256(text).hexdigest()[:16]

    def load(self) -> None:
        self.weights = load_weights(self.weights_path)
        log.info("mock model loaded with weights %s", self.weights)

    def check(self, job: Job) -> None:
        """Sizes, steps and weights are all the mock needs; adapters are checked as far as
        possible before a download."""
        self.adapters.check(job.loras)

    def batch_key(self, job: Job) -> Hashable:
        """One call runs one size, step count and adapter set, from noise or from images at one
        strength."""
        return (job.width, job.height, job.steps, job.mode, job.strength, job.loras)

    def _weights_for(self, job: Job) -> tuple[float, float]:
        """gamma and beta with the job's adapters applied (module docstring)."""
        assert self.weights is not None
        gamma, beta = self.weights["gamma"], self.weights["beta"]
        for deltas, scale in self.adapters.load(job.loras, read_mock_adapter):
            gamma += scale * deltas.get("lora.gamma", 0.0)
            beta += scale * deltas.get("lora.beta", 0.0)
        if not (0.0 <= gamma < 1.0 and beta >= 0.0):
            names = ", ".join(str(a) for a in job.loras)
            raise InvalidRequest(
                "loras",
                f"loras: adapters {names} take the mock's weights out of range (gamma "
                f"{gamma:g} must be in [0, 1), beta {beta:g} >= 0); lower their scales",
            )
        return gamma, beta

    def generate(
        self,
        jobs: Sequence[Job],
        progress: ProgressCallback | None = None,
        preview: PreviewCallback | None = None,
    ) -> list[list[np.ndarray]]:
        if self.weights is None:
            raise RuntimeError("MockModel.generate called before load()")
        if len({self.batch_key(job) for job in jobs}) != 1:
            raise ValueError("a batch must share width, height, steps, mode, strength, adapters")
        first = jobs[0]
        gamma, beta = self._weights_for(first)
        steps, height, width = first.steps, first.height, first.width
        generators = [torch.Generator().manual_seed(s) for job in jobs for s in job.seeds]
        drift = torch.stack(
            [
                (
                    prompt_pattern(job.prompt, height, width)
                    - prompt_pattern(job.negative_prompt, height, width)
                ).mul_((1.0 - gamma) * job.prompt_weight)
                for job in jobs
                for _ in job.seeds
            ]
        )
        x = torch.empty(len(generators), 3, height, width)
        noise = torch.empty_like(x)
        drawer = NoiseDrawer(tuple(x.shape[1:]))
        for i, g in enumerate(generators):
            drawer.draw(g, x[i])
        first_step, x, init, keep = self._start(jobs, x)
        for t in range(first_step, steps + 1):
            sigma = 1.0 - 0.5 * (t - 1) / max(steps - 1, 1)
            for i, g in enumerate(generators):
                drawer.draw(g, noise[i])
            x.mul_(gamma).add_(drift).add_(noise.mul_(beta * sigma))
            if keep is not None:
                x = torch.where(keep, init, x)
            if progress is not None:
                progress(t - first_step + 1, steps - first_step + 1)
            if preview is not None:
                render = lambda: per_job(jobs, _pixels(x.clone()))  # noqa: E731, B023
                preview(t - first_step + 1, steps - first_step + 1, render)
        return per_job(jobs, _pixels(x))

    @staticmethod
    def _start(
        jobs: Sequence[Job], noise: torch.Tensor
    ) -> tuple[int, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The first step, x_0, and the images ``a`` with where to keep them (inpainting);
        see the module docstring. Text-to-image starts at step 1 from the noise itself."""
        first = jobs[0]
        if first.image is None or first.strength is None:
            return 1, noise, None, None
        s, steps = first.strength, first.steps
        init = torch.stack(
            [
                torch.tensor(job.image.pixels, dtype=torch.float32)
                .permute(2, 0, 1)
                .sub_(128.0)
                .mul_(1.0 / 64.0)
                for job in jobs
                if job.image is not None
                for _ in job.seeds
            ]
        )
        x = init.mul(1.0 - s).add_(noise.mul_(s))
        keep = None
        if first.mask is not None:
            keep = torch.stack(
                [
                    torch.from_numpy(job.mask.pixels == 0).unsqueeze(0)
                    for job in jobs
                    if job.mask is not None
                    for _ in job.seeds
                ]
            )
            x = torch.where(keep, init, x)
        return steps - int(steps * s) + 1, x, init, keep


def _pixels(x: torch.Tensor) -> list[np.ndarray]:
    """pixel = clip(floor(64 * x + 128), 0, 255), as HxWx3 arrays; ``x`` is consumed."""
    pixels = x.mul_(64.0).add_(128.0).clamp_(0.0, 255.0).floor_().to(torch.uint8)
    return list(pixels.permute(0, 2, 3, 1).contiguous().numpy())
