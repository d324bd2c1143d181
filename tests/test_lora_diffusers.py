"""LoRA adapters on the tiny random Stable Diffusion pipeline, with tiny LoRAs built by peft."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inference.errors import InvalidRequest
from inference.service import Service
from inference.settings import Settings

pytest.importorskip("peft")
REQUEST = {"prompt": "a fox", "seed": 5, "steps": 2, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def lora_dir(tiny_pipeline_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tools.tiny_lora import build_tiny_lora

    folder = tmp_path_factory.mktemp("loras")
    build_tiny_lora(tiny_pipeline_dir, folder / "a", seed=1)
    build_tiny_lora(tiny_pipeline_dir, folder / "b", seed=2, rank=2)
    build_tiny_lora(tiny_pipeline_dir, folder / "c", seed=3)
    build_tiny_lora(tiny_pipeline_dir, folder / "sdxl-like", seed=4, cross_attention_dim=48)
    return folder


@pytest.fixture(scope="module")
def service(tiny_pipeline_dir: Path, lora_dir: Path) -> Iterator[Service]:
    settings = Settings(
        model=str(tiny_pipeline_dir),
        device="cpu",
        lora_dir=lora_dir,
        max_wait_ms=0,
        lora_cache_max_count=2,
        max_loras=2,
        result_cache_mb=0,  # every request reaches the pipeline and its adapters
    )
    svc = Service.from_settings(settings).start()
    yield svc
    svc.stop()


def image(service: Service, *loras: tuple[str, float]) -> bytes:
    request: dict[str, Any] = {**REQUEST, "loras": [{"ref": r, "scale": s} for r, s in loras]}
    return service.generate(request).images[0].data


def test_adapters_change_the_image_and_switch_without_reloading_the_base(
    service: Service,
) -> None:
    pipe = service.model.pipe
    base = image(service)
    a = image(service, ("local:a", 1.0))
    b = image(service, ("local:b", 1.0))
    both = image(service, ("local:a", 1.0), ("local:b", 0.5))
    assert len({base, a, b, both}) == 4
    assert image(service, ("local:a", 1.0)) == a  # a cached switch back: the same pixels
    assert image(service) == base  # no adapters after adapters: exactly the base model
    assert service.model.pipe is pipe  # the base model was never reloaded
    stats = service.model.adapters.cache.stats
    assert stats.misses == 2 and stats.hits >= 3


def test_scale_zero_is_exactly_no_adapter(service: Service) -> None:
    assert image(service, ("local:a", 0.0)) == image(service)
    assert image(service, ("local:a", 0.0), ("local:b", 0.0)) == image(service)


def test_eviction_deletes_the_adapter_from_the_pipeline(service: Service) -> None:
    before = image(service, ("local:a", 1.0))
    image(service, ("local:b", 1.0))
    image(service, ("local:c", 1.0))  # the cache holds 2: the least recent goes
    loaded = [entry["ref"] for entry in service.info()["loras"]]
    assert loaded == ["local:b", "local:c"]
    names = {n for names in service.model.pipe.get_list_adapters().values() for n in names}
    assert len(names) == 2
    reloaded = image(service, ("local:a", 1.0))
    assert "local:a" in [entry["ref"] for entry in service.info()["loras"]]  # really reloaded
    assert reloaded == before  # the reload gives the pixels the first load gave


def test_an_adapter_that_does_not_fit_fails_alone(service: Service) -> None:
    a = image(service, ("local:a", 1.0))
    with pytest.raises(InvalidRequest, match=r"'local:sdxl-like' does not fit model .*size"):
        image(service, ("local:sdxl-like", 1.0))
    assert service.engine.ready
    assert image(service, ("local:a", 1.0)) == a
    assert "local:sdxl-like" not in [e["ref"] for e in service.info()["loras"]]


def test_a_pipeline_without_lora_support_refuses_adapters(service: Service) -> None:
    from inference.models.diffusers.diffusers_lora import PipelineAdapters

    adapters = PipelineAdapters(service.settings)
    adapters.attach(object(), "no-lora-model")
    job = service.job({**REQUEST, "loras": [{"ref": "local:a"}]})
    with pytest.raises(InvalidRequest, match="takes no LoRA adapters"):
        adapters.check(job.loras)


def test_the_adapter_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from tools.bench_lora import main

    threads = torch.get_num_threads()
    try:
        assert main(["--repeats", "1", "--steps", "1", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    table = capsys.readouterr().out
    assert "first use of an adapter" in table and "cached switch" in table
