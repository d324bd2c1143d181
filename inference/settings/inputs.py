"""Settings of what requests may bring in: image inputs and LoRA adapters."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, BaseModel, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from inference import schema
from inference.hosts import HostList
from inference.lora_spec import LORAS_MAX, LoraAdapter, parse_list

#: Pillow's own decompression-bomb threshold (``PIL.Image.MAX_IMAGE_PIXELS``): above it Pillow
#: warns, and refuses at twice it, before our check could name the setting.
PILLOW_BOMB_PIXELS = 89_478_485


class InputSettings(BaseModel):
    """Images (MAX_IMAGE_*, INPUT_URL_*) and LoRA adapters (LORA_*, MAX_LORAS, DEFAULT_LORAS)."""

    # LoRA adapters (issue 16; inference/lora/)
    lora_dir: Path | None = Field(
        None, description="Folder whose files requests may name as 'local:NAME' adapters."
    )
    lora_allowed_hosts: HostList = Field(
        default_factory=HostList,
        description="Comma-separated hosts adapter URLs may come from ('*.example.com' matches "
        "subdomains, '*' any public host); empty: URLs refused.",
    )
    lora_allow_private_urls: bool = Field(
        False,
        description="Allow adapter URLs that resolve to private or loopback addresses "
        "(tests, a registry inside your network).",
    )
    lora_download_dir: Path | None = Field(
        None,
        description="Where URL adapters are downloaded once (default: HF_HOME/lora-downloads, "
        "on Modal's weights Volume); hub adapters use the Hugging Face cache.",
    )
    lora_max_file_bytes: int = Field(
        512 * 1024**2, ge=1024, description="Larger adapter files are refused."
    )
    lora_url_deadline_s: float = Field(
        120.0,
        gt=0,
        le=3600,
        description="Downloading one adapter URL takes at most this long in all (connect, "
        "headers and body: a host that drips bytes is cut off here).",
    )
    weights_url_max_bytes: int = Field(
        50 * 1024**3,
        ge=1024,
        description="Cog weights given as a URL (COG_WEIGHTS): larger downloads are refused.",
    )
    weights_url_deadline_s: float = Field(
        3600.0,
        gt=0,
        description="Cog weights given as a URL (COG_WEIGHTS): the whole download takes at "
        "most this long.",
    )
    lora_cache_max_count: int = Field(
        8, ge=1, description="Adapters kept loaded at once; the least recently used is unloaded."
    )
    lora_cache_max_bytes: int = Field(
        2 * 1024**3, ge=1024, description="Adapter file bytes kept loaded at once."
    )
    max_loras: int = Field(
        3, ge=0, le=LORAS_MAX, description="Most adapters in one request (0: adapters off)."
    )
    lora_max_rank: int = Field(
        64,
        ge=1,
        le=1024,
        description="With TORCH_COMPILE=1: the highest LoRA rank an adapter may have. Adapters "
        "hot-swap into slots of this rank in the compiled denoiser (no recompilation per "
        "adapter); smaller ones are zero-padded, so every adapter costs the compute of this "
        "rank, and one above it is refused (422). Unused without TORCH_COMPILE.",
    )
    default_loras: Annotated[list[LoraAdapter], NoDecode] = Field(
        default_factory=list,
        description="Adapters for requests that omit 'loras': comma-separated REF[:SCALE].",
    )

    # Image inputs (image-to-image, inpainting)
    max_image_bytes: int = Field(
        10_000_000,
        ge=1024,
        description="Largest image file (image or mask) a request may carry, however it is "
        "sent; larger ones are refused with 413.",
    )
    max_image_pixels: int = Field(
        25_000_000,
        ge=schema.SIDE_MIN**2,
        le=PILLOW_BOMB_PIXELS,
        description="Most pixels an image may have, read from its header before it is decoded "
        "(a few-KB file can hold billions of pixels); at most Pillow's own bomb limit.",
    )
    max_decode_bytes: int | None = Field(
        None,
        ge=64 * 1024**2,
        description="Most memory one image decode may take, computed from its header (width, "
        "height, bytes per pixel of each mode it passes through) before decoding; more: 413. "
        "Default: MAX_IMAGE_PIXELS x 4 x 5 + 16 MiB (517 MB), room for an RGBA image of "
        "MAX_IMAGE_PIXELS.",
    )
    max_concurrent_decodes: int = Field(
        2,
        ge=1,
        le=64,
        description="Images decoded at once in this process; more wait for a slot (at most "
        "REQUEST_TIMEOUT_S, then 503). Decode memory peaks at this x MAX_DECODE_BYTES.",
    )
    input_url_hosts: HostList = Field(
        default_factory=HostList,
        validation_alias=AliasChoices("input_url_hosts", "image_url_hosts"),
        description="Comma-separated hosts that image fields may be fetched from as http(s) "
        "URLs ('*.example.com' matches subdomains, '*' any host); empty: URLs are refused. "
        "Was IMAGE_URL_HOSTS.",
    )
    input_url_deadline_s: float = Field(
        10.0,
        gt=0,
        le=300,
        validation_alias=AliasChoices("input_url_deadline_s", "image_url_timeout_s"),
        description="Fetching one image URL takes at most this long in all (connect, headers "
        "and body: a host that drips bytes is cut off here). Was IMAGE_URL_TIMEOUT_S.",
    )
    input_url_allow_private: bool = Field(
        False,
        validation_alias=AliasChoices("input_url_allow_private", "image_url_allow_private"),
        description="Fetch image URLs that resolve to private, loopback or link-local "
        "addresses (checked after DNS resolution); off by default. Was IMAGE_URL_ALLOW_PRIVATE.",
    )
    max_blocking_workers: int = Field(
        8,
        ge=1,
        le=256,
        description="Threads that validate requests carrying images or adapters (decoding, "
        "resizing, fetching image URLs, downloading adapters) off the event loop; more waiting "
        "requests queue for them. A pool of its own: slow hosts never delay encoding results "
        "or the model.",
    )

    @field_validator("default_loras", mode="before")
    @classmethod
    def _adapters_text(cls, value: object) -> object:
        return parse_list(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _adapters_fit_cache(self) -> InputSettings:
        if self.max_loras > self.lora_cache_max_count:
            raise ValueError(
                f"MAX_LORAS={self.max_loras} exceeds LORA_CACHE_MAX_COUNT="
                f"{self.lora_cache_max_count}: one request's adapters must fit the cache; "
                "lower MAX_LORAS or raise LORA_CACHE_MAX_COUNT"
            )
        return self
