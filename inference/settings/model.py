"""Settings of the model: which backend and weights, and where and how it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from inference import schema


class ModelSettings(BaseModel):
    """MODEL, MODEL_REVISION, WEIGHTS_PATH, DEVICE, DTYPE, SCHEDULER and the diffusers knobs."""

    model: str = Field(
        "mock",
        description="'mock' (embedded), a local diffusers folder, a Hugging Face hub id, or "
        "your own class as 'package.module:ClassName' (or the name of an entry point in the "
        "'diffusion_serve.models' group).",
    )
    models_file: Path | None = Field(
        None,
        description="A registry of several models and versions with traffic weights (TOML, "
        "e.g. examples/models.toml); when set, MODEL, MODEL_REVISION and WEIGHTS_PATH are not "
        "served and each version names its own.",
    )
    max_loaded_models: int | None = Field(
        None,
        ge=1,
        description="With MODELS_FILE: the most registry versions loaded at once besides the "
        "default version (which stays loaded: /ready, the UI and Cog serve it). A version loads "
        "on its first request and the least recently used one is unloaded to make room; unset "
        "keeps every version loaded once used.",
    )
    host_cached_models: int = Field(
        0,
        ge=0,
        description="With MAX_LOADED_MODELS: how many unloaded versions keep their weights in "
        "host memory (RAM), least recently unloaded dropped first, so loading one again only "
        "copies them to the device instead of reading them from disk (docs/fleet.md has the "
        "measured cost of both). Each costs its weights' size in RAM, read again from disk in "
        "the background after it unloads; backends without preload() (the mock's weights are "
        "tiny) ignore it. 0 keeps nothing.",
    )
    model_revision: str | None = Field(
        None, description="Hub revision (commit hash or tag) to pin a hub model to."
    )
    weights_path: Path | None = Field(
        None,
        description="The mock model's JSON or safetensors file with 'gamma' and 'beta'; for "
        "your own class, whatever file or folder it reads (it gets these settings).",
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="Where the model runs; 'auto' picks cuda, then mps, then cpu."
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto",
        description="Diffusers models: weight dtype; 'auto' is bfloat16 on CUDA GPUs that "
        "support it, else float16 on a GPU, float32 on CPU.",
    )
    scheduler: schema.Scheduler | None = Field(
        None,
        description="Diffusers models: the sampler for requests that name none; unset keeps "
        "the model's own.",
    )
    torch_compile: bool = Field(
        False,
        description="Diffusers models on CUDA: torch.compile the denoiser (slower start, faster "
        "steps; each new batch size compiles once).",
    )
    channels_last: bool = Field(
        False, description="Diffusers models on CUDA: channels_last memory format for UNet/VAE."
    )
    safety_checker: Literal["keep", "disable"] = Field(
        "keep",
        description="Diffusers models that ship a safety checker (SD 1.x): keep it (flagged "
        "images come back black with nsfw=true) or disable it. The deployment's decision.",
    )
    hf_hub_offline: bool = Field(
        False,
        description="Never contact the Hugging Face Hub: hub models load from the local cache "
        "only.",
    )

    @model_validator(mode="after")
    def _model_consistent(self) -> ModelSettings:
        if self.torch_compile and self.device in ("cpu", "mps"):
            raise ValueError(
                f"TORCH_COMPILE=1 needs a CUDA GPU, but DEVICE={self.device}; "
                "unset TORCH_COMPILE or use DEVICE=cuda (or auto)"
            )
        if self.model_revision == "":
            self.model_revision = None  # an empty Space variable means "no pin", not revision ""
        return self
