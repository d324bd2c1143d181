"""Tiny LoRA adapters for the tiny random pipeline (``tools.tiny``), built offline with peft.

The adapter's weights are random (``init_lora_weights=False``: peft's default starts with B = 0,
an adapter that changes nothing, which would make every test of it vacuous). Saved with the
pipeline's own ``save_lora_weights``, so it is exactly the file format hub LoRAs use.
"""

from __future__ import annotations

from pathlib import Path

#: The UNet's attention projections: what SD LoRAs (diffusers' training scripts) target.
TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def build_tiny_lora(
    pipeline_dir: Path,
    folder: Path,
    seed: int = 0,
    rank: int = 4,
    cross_attention_dim: int | None = None,
    targets: tuple[str, ...] = TARGETS,
) -> Path:
    """A LoRA for the UNet of ``pipeline_dir``, saved in ``folder``; its file's path.

    ``cross_attention_dim`` other than the pipeline's builds the adapter on a UNet of another
    shape: a LoRA that does not fit (as an SDXL LoRA does not fit SD 1.5). ``targets``: the
    UNet modules it adapts.
    """
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(pipeline_dir / "unet", local_files_only=True)
    if cross_attention_dim is not None:
        config = dict(unet.config)
        config["cross_attention_dim"] = cross_attention_dim
        unet = UNet2DConditionModel.from_config(config)
    unet.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets), init_lora_weights=False)
    )
    folder.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=get_peft_model_state_dict(unet), safe_serialization=True
    )
    return folder / "pytorch_lora_weights.safetensors"
