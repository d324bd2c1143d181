"""Settings of what requests may bring in: image inputs and LoRA adapters (a part of
``inference.settings.Settings``, read from the environment like every other field)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import NoDecode

from inference import schema
from inference.adapters.spec import LORAS_MAX, LoraAdapter, parse_list

#: Pillow's own decompression-bomb threshold (``PIL.Image.MAX_IMAGE_PIXELS``): above it Pillow
#: warns, and refuses at twice it, before our check could name the setting.
PILLOW_BOMB_PIXELS = 89_478_485


class InputSettings(BaseModel):
    """Images (MAX_IMAGE_*, IMAGE_URL_*) and LoRA adapters (LORA_*, MAX_LORAS, DEFAULT_LORAS)."""

    # LoRA adapters (issue 16; inference/adapters/)
    lora_dir: Path | None = Field(
        None, description="Folder whose files requests may name as 'local:NAME' adapters."
    )
    lora_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated hosts adapter URLs may come from ('*': any public host); "
        "empty: URLs refused.",
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
    weights_url_max_bytes: int = Field(
        50 * 1024**3,
        ge=1024,
        description="Cog weights given as a URL (COG_WEIGHTS): larger downloads are refused.",
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
    image_url_hosts: str = Field(
        "",
        description="Comma-separated hosts that image fields may be fetched from as http(s) "
        "URLs ('*.example.com' matches subdomains, '*' any host); empty: URLs are refused.",
    )
    image_url_timeout_s: float = Field(
        10.0, gt=0, le=300, description="Fetching one image URL takes at most this long."
    )
    image_url_allow_private: bool = Field(
        False,
        description="Fetch image URLs that resolve to private, loopback or link-local "
        "addresses (checked after DNS resolution); off by default.",
    )

    max_blocking_workers: int = Field(
        8,
        ge=1,
        le=256,
        description="Threads that validate requests carrying images (decoding, resizing, "
        "fetching image URLs) off the event loop; more waiting requests queue for them. A "
        "pool of its own: slow image hosts never delay encoding results or the model.",
    )

    @field_validator("lora_allowed_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value

    @field_validator("default_loras", mode="before")
    @classmethod
    def _adapters_text(cls, value: object) -> object:
        return parse_list(value) if isinstance(value, str) else value

    @property
    def url_hosts(self) -> tuple[str, ...]:
        """IMAGE_URL_HOSTS as lower-case host patterns."""
        return tuple(h.strip().lower() for h in self.image_url_hosts.split(",") if h.strip())
