"""Which devices a server runs its model replicas on (DEVICES), and the settings of each.

Here, not in the engine, because ``DEVICES=auto`` asks torch how many GPUs are visible and only
the model backends import torch. The engine receives built replicas and never names a device.
"""

from __future__ import annotations

import logging

from inference.settings import Settings

log = logging.getLogger(__name__)


def visible_gpus() -> int:
    """CUDA GPUs torch can see; 0 without torch (the mock and your own class need none)."""
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count())


def device_names(settings: Settings) -> list[str]:
    """DEVICES as a list; one device, DEVICE, when DEVICES is empty or 'auto' finds no GPU."""
    if not settings.devices:
        return [settings.device]
    if settings.devices == "auto":
        count = visible_gpus()
        if not count:
            log.warning(
                "DEVICES=auto but no CUDA GPU is visible: one device, DEVICE=%s", settings.device
            )
            return [settings.device]
        return [f"cuda:{index}" for index in range(count)]
    return settings.devices.split(",")


def replica_settings(settings: Settings) -> list[Settings]:
    """One settings copy per device, each with its own ``device``; ``[settings]`` for one.

    A copy skips validation on purpose: DEVICE's choices name a kind of device, while a
    replica's names the device itself (cuda:1), which backends pass on to torch as it is.
    """
    names = device_names(settings)
    if len(names) == 1 and names[0] == settings.device:
        return [settings]
    return [settings.model_copy(update={"device": name}) for name in names]


def shared_device(model: object, requested: str) -> str:
    """The name under which ``model``'s replica shares its device with other versions
    (``engine.arbiter``), once loaded.

    The device the backend chose (a ``device`` attribute, as the diffusers backend sets when
    DEVICE=auto resolves), else the one asked for by name; a model that names none (the mock,
    a class of your own under DEVICE=auto) computes on the CPU: "cpu". "cuda" is "cuda:0",
    torch's default GPU, so the two spellings share one arbiter.
    """
    chosen = getattr(model, "device", None)
    name = chosen if isinstance(chosen, str) and chosen else requested
    if name == "auto":
        name = "cpu"
    return "cuda:0" if name == "cuda" else name
