"""Cog adapter: Replicate's entry point (cog.yaml: ``predict: "predict.py:Predictor"``).

It builds the service once in ``setup()`` and hands it Cog's inputs as a request; all model
logic and validation live in ``inference/``. The ``Input(...)`` declarations repeat the request
schema as literals because ``cog build`` parses this file statically (an imported constant
"cannot be statically resolved"); tests/test_cog.py proves they equal ``GenerateRequest`` field
by field.

``predict`` is async and awaits ``service.submit``, so up to ``MAX_CONCURRENCY`` predictions are
in flight at once and the engine's batcher groups them into shared model calls.

Image inputs are ``cog.Path`` files (``cog predict -i image=@photo.png``; Replicate's API takes
a URL or a data: URI, which Cog downloads); their bytes go to the service like any other
front door's. ``prompt_strength`` is Replicate's name for the schema's ``strength``.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from typing import Optional  # Cog documents Optional[...] for optional inputs

from cog import BasePredictor, Input, Path, concurrent

from inference.errors import InferenceError
from inference.fleet import Fleet
from inference.logs import configure_logging
from inference.lora.trained import is_url, trained_weights
from inference.lora_spec import parse_one
from inference.results import unflagged
from inference.service import Service
from inference.settings import Settings

#: Predictions in flight at once; `cog build` bakes it into COG_MAX_CONCURRENCY. Keep it equal
#: to cog.yaml's concurrency.max (the cog check enforces that).
MAX_CONCURRENCY = 8
#: Output folders older than this are deleted: Cog reads the files when predict() returns and
#: does not delete them, so without pruning a long-lived container fills its disk.
OUTPUT_TTL_S = 600


class Predictor(BasePredictor):
    """Serves the configured model (``MODEL``, default the embedded mock) through Cog."""

    service: Service
    outputs: Path

    def setup(self, weights: Optional[Path] = None) -> None:  # noqa: UP045
        """Load and warm up the model once per container.

        Cog's ``weights`` (``COG_WEIGHTS``) selects the weights: a URL (Replicate's trained
        weights: a LoRA served as the default adapter, or an archived diffusers folder; see
        inference/lora/trained.py), a diffusers folder (it holds model_index.json) or, when
        MODEL names a diffusers model, a hub id (like ``MODEL``); otherwise the mock model's JSON
        or safetensors file (like ``WEIGHTS_PATH``). A bad path fails setup naming it.
        """
        settings = Settings()
        configure_logging(settings.log_level)
        if weights is not None and is_url(str(weights)):
            settings = Settings(**trained_weights(str(weights), settings))
        elif weights is not None and str(weights):
            own_class = ":" in settings.model  # MODEL=package.module:Class reads WEIGHTS_PATH
            pipeline = not own_class and (
                settings.model != "mock" or (Path(str(weights)) / "model_index.json").is_file()
            )
            settings = Settings(**{"model" if pipeline else "weights_path": str(weights)})
        # With a registry (MODELS_FILE) a container serves its default version, as a Replicate
        # model serves one version: the registry's pinned default, else its default model's
        # heaviest version.
        self.service = Fleet.from_settings(settings).default.start()
        self.outputs = Path(tempfile.mkdtemp(prefix="cog-outputs-"))

    @concurrent(max=MAX_CONCURRENCY)
    async def predict(
        self,
        prompt: str = Input(default="", max_length=2000, description="What to draw."),
        negative_prompt: str = Input(
            default="", max_length=2000, description="What to steer away from."
        ),
        seed: Optional[int] = Input(  # noqa: UP045
            default=None,
            ge=0,
            le=4294967295,
            description="Random seed; empty: random (see the metrics). Image i uses seed + i.",
        ),
        prompt_weight: Optional[float] = Input(  # noqa: UP045
            default=None,
            ge=0.0,
            le=30.0,
            description="How strongly the image follows the prompt; empty: model's default.",
        ),
        steps: Optional[int] = Input(  # noqa: UP045
            default=None, ge=1, le=150, description="Denoising steps; empty: model's default."
        ),
        width: Optional[int] = Input(  # noqa: UP045
            default=None,
            ge=64,
            le=2048,
            description="Image width in pixels, a multiple of 8; empty: model's default.",
        ),
        height: Optional[int] = Input(  # noqa: UP045
            default=None,
            ge=64,
            le=2048,
            description="Image height in pixels, a multiple of 8; empty: model's default.",
        ),
        num_outputs: int = Input(default=1, ge=1, le=4, description="Images to generate."),
        output_format: str = Input(
            default="png", choices=["png", "jpeg", "webp"], description="Image file format."
        ),
        scheduler: Optional[str] = Input(  # noqa: UP045
            default=None,
            choices=[
                "ddim",
                "ddpm",
                "dpm++",
                "dpm++_karras",
                "euler",
                "euler_a",
                "heun",
                "lms",
                "pndm",
                "unipc",
            ],
            description="Sampler for diffusers models; empty: the model's own.",
        ),
        image: Optional[Path] = Input(  # noqa: UP045
            default=None,
            accept="image/*",
            description="Init image (image-to-image, inpainting); empty: text-to-image.",
        ),
        mask: Optional[Path] = Input(  # noqa: UP045
            default=None,
            accept="image/*",
            description="Inpainting mask, the image's size: white repaints, black keeps.",
        ),
        prompt_strength: Optional[float] = Input(  # noqa: UP045
            default=None,
            ge=0.0,
            le=1.0,
            description="How far to move from the image: 0 keeps it, 1 ignores it; empty: 0.8.",
        ),
        lora_weights: Optional[str] = Input(  # noqa: UP045
            default=None,
            description="LoRA adapters, comma-separated REF[:SCALE]; empty: the trained adapter",
        ),
        lora_scale: float = Input(
            default=1.0,
            ge=0.0,
            le=4.0,
            description="Scale of each adapter that names none (and of the trained weights).",
        ),
    ) -> list[Path]:
        """Validate through the project's schema, await the batcher, write out-{i}.{ext}."""
        request = {
            "prompt": prompt,
            "negative_prompt": negative_prompt,
            "seed": seed,
            "prompt_weight": prompt_weight,
            "steps": steps,
            "width": width,
            "height": height,
            "num_outputs": num_outputs,
            "output_format": output_format,
            "scheduler": scheduler,
            "image": None if image is None else await asyncio.to_thread(image.read_bytes),
            "mask": None if mask is None else await asyncio.to_thread(mask.read_bytes),
            "strength": prompt_strength,
            "loras": self._loras(lora_weights, lora_scale),
        }
        try:
            result = await self.service.submit(request)
            self.record_metric("seed", result.seed)
            self.record_metric("batch_size", result.batch_size)
            self.record_metric("model", result.model)
            print(f"seed={result.seed} batch_size={result.batch_size} model={result.model}")
            kept = unflagged(result)  # flagged images left out, as Replicate's own models do
        except InferenceError as exc:  # Cog shows the message; our traceback would add noise
            raise (ValueError if isinstance(exc, ValueError) else RuntimeError)(
                exc.message
            ) from None
        images = [image.data for _, image in kept]
        return await asyncio.to_thread(self._write, images, result.images[0].format)

    def _loras(self, weights: str | None, scale: float) -> list[dict[str, object]] | None:
        """Replicate's ``lora_weights``/``lora_scale`` as the request's ``loras``: no weights
        means the trained adapters (DEFAULT_LORAS) at ``lora_scale``."""
        if weights is None or not weights.strip():
            defaults = self.service.settings.default_loras
            return [{"ref": a.ref, "scale": scale} for a in defaults] if defaults else None
        return [{"scale": scale, **parse_one(part)} for part in weights.split(",") if part.strip()]

    def _write(self, images: list[bytes], ext: str) -> list[Path]:
        """Files out-{i}.{ext} in a fresh folder (several predictions run at once); old folders
        are pruned."""
        for old in self.outputs.iterdir():
            try:
                expired = time.time() - old.stat().st_mtime > OUTPUT_TTL_S
            except OSError:  # a concurrent prediction pruned it first
                continue
            if expired:
                shutil.rmtree(old, ignore_errors=True)
        folder = Path(tempfile.mkdtemp(prefix="prediction-", dir=self.outputs))
        paths = [folder / f"out-{i}.{ext}" for i in range(len(images))]
        for path, data in zip(paths, images, strict=True):
            path.write_bytes(data)
        return paths
