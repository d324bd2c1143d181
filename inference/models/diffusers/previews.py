"""Cheap previews of a diffusers pipeline's latents: a linear latent-to-RGB map fitted to its VAE.

Decoding the latents with the VAE at every previewed step would cost about as much as a
denoising step. The usual shortcut is a fixed latent-channels x RGB matrix, but each VAE family
needs its own table (SD 1.x, SDXL and SD3 latents differ). So the matrix is fitted instead, once,
on the first preview asked for: the pipeline's own VAE encodes a few flat colours, and least
squares maps their mean latents (in the pipeline's scaled latent space, the one the denoising
loop works in) back to the colours. That gives a blurry but faithful-coloured preview of any
pipeline whose latents are N x C x h x w (SD 1.x/2.x, SDXL, SD3); packed latents (FLUX) and
VAEs without an encoder get none, which only means no partial images.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Flat colours the map is fitted on: 3 levels per channel, so 27 equations per output channel,
#: more than the unknowns of a 16-channel latent (16 weights and a bias).
LEVELS = (0.0, 0.5, 1.0)
CALIBRATION_SIDE = 64


class LatentPreviewer:
    """Renders latents as approximate RGB pixels; fitted lazily, on the thread that renders."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self._map: np.ndarray | None = None  # (C + 1) x 3: the weights, then the bias row
        self._unavailable = False

    def render(self, latents: Any, width: int, height: int) -> list[np.ndarray] | None:
        """One HxWx3 uint8 preview per latent, or None when this pipeline cannot preview."""
        import torch

        if not isinstance(latents, torch.Tensor) or latents.ndim != 4 or self._unavailable:
            return None
        if self._map is None:
            self._map = self._fit()
            if self._map is None:
                self._unavailable = True
                return None
        weights = self._map
        if latents.shape[1] != weights.shape[0] - 1:
            return None
        flat = latents.detach().float().cpu().numpy()
        rgb = np.einsum("bchw,cr->bhwr", flat, weights[:-1]) + weights[-1]
        pixels = (np.clip(rgb, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        return [_resize(image, width, height) for image in pixels]

    def _fit(self) -> np.ndarray | None:
        """Least squares from mean scaled latents of flat colours to the colours; None if the
        VAE cannot encode (then there are no previews)."""
        import torch

        vae = getattr(self.pipe, "vae", None)
        try:
            colours = torch.tensor([(r, g, b) for r in LEVELS for g in LEVELS for b in LEVELS])
            side = CALIBRATION_SIDE
            images = (colours * 2.0 - 1.0)[:, :, None, None].expand(-1, -1, side, side)
            parameter = next(vae.parameters())
            with torch.inference_mode():
                encoded = vae.encode(images.to(parameter.device, parameter.dtype))
                dist = getattr(encoded, "latent_dist", None)
                latents = (dist.mean if dist is not None else encoded.latents).float().cpu()
            config = vae.config
            shift = getattr(config, "shift_factor", None) or 0.0
            scaled = (latents - shift) * float(getattr(config, "scaling_factor", 1.0) or 1.0)
            means = scaled.mean(dim=(2, 3)).numpy().astype(np.float64)
            design = np.concatenate([means, np.ones((len(means), 1))], axis=1)
            solution = np.linalg.lstsq(design, colours.numpy().astype(np.float64), rcond=None)[0]
            return solution.astype(np.float32)
        except Exception as exc:  # no VAE, no encoder, an unusual output: previews are optional
            log.warning("no latent previews for this pipeline: %s: %s", type(exc).__name__, exc)
            return None


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Latent-resolution pixels at the image's size: repeated when the factor is whole."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return np.ascontiguousarray(image)
    if height % h == 0 and width % w == 0:
        return np.ascontiguousarray(image.repeat(height // h, 0).repeat(width // w, 1))
    from PIL import Image

    resized = Image.fromarray(image).resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(resized, dtype=np.uint8)
