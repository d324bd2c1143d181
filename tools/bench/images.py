"""Photo-like test images for the encoder and stand-in-model benchmarks.

PNG's cost and size depend on content: noise barely compresses, flat colour compresses to
nothing, and neither is what a diffusion model returns. These images have the statistics of a
photograph instead: a 1/f power spectrum (structure at every scale), smooth gradients, a few
soft-edged shapes and a little sensor grain. They are computed from a seed with numpy alone,
so every machine gets the same pixels, and cached, so a benchmark pays for them once.
"""

from __future__ import annotations

import functools

import numpy as np


def _fractal(rng: np.random.Generator, size: int) -> np.ndarray:
    """A size x size field with a 1/f amplitude spectrum, scaled to [0, 1]."""
    freq_y = np.fft.fftfreq(size)[:, None]
    freq_x = np.fft.rfftfreq(size)[None, :]
    radius = np.hypot(freq_y, freq_x)
    radius[0, 0] = 1.0
    spectrum = (rng.normal(size=radius.shape) + 1j * rng.normal(size=radius.shape)) / radius**1.1
    field = np.fft.irfft2(spectrum, s=(size, size))
    field -= field.min()
    return field / field.max()


@functools.cache
def photo_like(size: int, seed: int = 0) -> np.ndarray:
    """A size x size x 3 uint8 image that compresses like a photograph (read-only, cached)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size] / size
    sky = np.stack([0.35 + 0.3 * ys, 0.5 + 0.2 * ys, 0.85 - 0.25 * ys], axis=-1)
    image = sky * 0.55 + 0.45 * np.stack([_fractal(rng, size) for _ in range(3)], axis=-1)
    for _ in range(6):  # soft-edged objects, each with its own colour
        cy, cx, r = rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85), rng.uniform(0.05, 0.25)
        mask = np.clip((r - np.hypot(ys - cy, xs - cx)) * size / 6, 0, 1)[..., None]
        shade = rng.uniform(0.1, 0.9, size=3) * (0.8 + 0.4 * _fractal(rng, size)[..., None])
        image = image * (1 - mask) + shade * mask
    image = image * 255 + rng.normal(0, 1.5, size=image.shape)  # sensor grain
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    pixels.flags.writeable = False
    return pixels
