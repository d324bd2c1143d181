"""Stable Diffusion pipelines with random weights, built offline from configs.

Two sizes, both saved with ``save_pretrained`` (safetensors) so they load through the real
loading code (``MODEL=<folder>``) exactly like a downloaded checkpoint:

- ``build_tiny_pipeline``: a few-hundred-kilobyte SD pipeline that draws a 64x64 image in well
  under a second on a CPU. Tests and demos use it: it exercises every code path of the diffusers
  backend (tokenizer, text encoder, UNet, VAE, scheduler) with no download.
- ``build_sd15_pipeline``: the Stable Diffusion 1.5 architecture (860M-parameter UNet, CLIP
  ViT-L/14 text encoder, 8x VAE) with random weights. Its compute per step equals the real model's,
  so GPU benchmarks need no weights download; its images are noise.

Both write a tokenizer over a tiny vocabulary (the 26 letters, digits and a little punctuation),
because the real CLIP vocabulary is a download; with random weights the tokens carry no meaning
anyway, and prompt length and batch shapes stay those of the real model.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

#: The text encoder's context; the tokenizer's ``model_max_length`` must equal it.
MAX_POSITION_EMBEDDINGS = 77

#: Stable Diffusion's noise schedule (the scheduler config shipped with SD 1.x).
SD_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "skip_prk_steps": True,
    "prediction_type": "epsilon",
}


def write_tiny_tokenizer(folder: Path) -> Path:
    """Write vocab.json and merges.txt for a CLIP BPE tokenizer over a tiny vocabulary.

    CLIP marks the end of a word with ``</w>``, so each symbol appears twice: inside a word and
    ending one. Unknown characters map to ``<|endoftext|>`` (CLIP's unk token).
    """
    folder.mkdir(parents=True, exist_ok=True)
    symbols = string.ascii_lowercase + string.digits + ".,!?'-"
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    tokens += list(symbols) + [f"{s}</w>" for s in symbols]
    # A few merges so the BPE model has real work to do on common pairs.
    merges = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("i", "n"), ("e", "r</w>")]
    tokens += ["th", "the</w>", "an", "in", "er</w>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n")
    return folder


def _tokenizer(folder: Path) -> Any:
    from transformers import CLIPTokenizer

    write_tiny_tokenizer(folder)
    return CLIPTokenizer.from_pretrained(
        str(folder), model_max_length=MAX_POSITION_EMBEDDINGS, local_files_only=True
    )


def build_tiny_pipeline(folder: Path, seed: int = 0) -> Path:
    """Build a tiny random SD pipeline (64x64 native) and save it to ``folder``; returns it.

    The weights depend only on ``seed``, so two builds with the same seed are identical.
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(  # two blocks: a scale factor of 2, so a 32x32 latent is 64x64 pixels
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=MAX_POSITION_EMBEDDINGS,
            vocab_size=128,
            layer_norm_eps=1e-5,
        )
    )
    return _save(folder, unet, vae, text_encoder, DDIMScheduler.from_config(SD_SCHEDULER_CONFIG))


#: Stable Diffusion 1.5's component configs (from its model repository's config.json files).
SD15_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "up_block_types": (
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ),
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
SD15_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
}
SD15_TEXT_ENCODER_CONFIG: dict[str, Any] = {  # CLIP ViT-L/14's text tower
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": MAX_POSITION_EMBEDDINGS,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 1,
}


def sd15_models() -> tuple[Any, Any, Any]:
    """UNet, VAE and text encoder with SD 1.5's architecture and random weights.

    Built under the current default device: ``with torch.device("meta")`` builds them without
    memory (tests count parameters that way), ``with torch.device("cuda")`` builds on a GPU.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    return (
        UNet2DConditionModel(**SD15_UNET_CONFIG),
        AutoencoderKL(**SD15_VAE_CONFIG),
        CLIPTextModel(CLIPTextConfig(**SD15_TEXT_ENCODER_CONFIG)),
    )


def build_sd15_pipeline(folder: Path, seed: int = 0) -> Path:
    """Save a pipeline with Stable Diffusion 1.5's architecture and random weights to ``folder``.

    The configs above are SD 1.5's, so a 512x512 image costs what the real model costs and the
    served path (``MODEL=<folder>``) is the one a real checkpoint takes. Building takes a minute
    or so on a CPU and writes about 4 GB (float32); the images are noise.
    """
    import torch
    from diffusers import PNDMScheduler

    folder = Path(folder)
    torch.manual_seed(seed)
    unet, vae, text_encoder = sd15_models()
    return _save(folder, unet, vae, text_encoder, PNDMScheduler.from_config(SD_SCHEDULER_CONFIG))


def _save(folder: Path, unet: Any, vae: Any, text_encoder: Any, scheduler: Any) -> Path:
    """Assemble a Stable Diffusion pipeline (no safety checker) and save it as safetensors."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=_tokenizer(folder / "tokenizer"),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder
