"""LoRA adapters hot-swapped into a compiled denoiser: no recompilation when switching.

TORCH_COMPILE=1 is refused on CPU by the settings (it pays only on CUDA), so the compiled
service here is the ordinary tiny-pipeline service whose UNet the test compiles itself, exactly
as ``pipelines.optimize`` does on CUDA, before any adapter is loaded. torch's own counters
(``torch._dynamo.utils.counters``) say how many graphs dynamo has compiled; images are compared
with an uncompiled service running the plain adapter API on the same weights.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.errors import InvalidRequest
from inference.service import Service
from inference.settings import Settings

pytest.importorskip("peft")
REQUEST = {"prompt": "a fox", "seed": 5, "steps": 2, "width": 64, "height": 64}
MAX_RANK = 4
#: "aot_eager" traces and recompiles exactly as inductor does (dynamo decides both) but runs the
#: traced graph eagerly: no C compiler, seconds instead of a minute on a loaded 2-core machine.
BACKEND = "aot_eager"
#: Per-pixel tolerance in 8-bit levels: compiled graphs may reorder float32 sums (and the slots
#: add a zero-scaled adapter), which can move a value across a rounding boundary; an adapter
#: moves some pixels by more than ten levels (asserted below), so this still tells adapters
#: apart. With aot_eager the images are in fact identical here (0 levels).
TOLERANCE = 1


@pytest.fixture(scope="module")
def lora_dir(tiny_pipeline_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tools.tiny_lora import TARGETS, build_tiny_lora

    folder = tmp_path_factory.mktemp("hotswap-loras")
    build_tiny_lora(tiny_pipeline_dir, folder / "a", seed=1, rank=MAX_RANK)
    build_tiny_lora(tiny_pipeline_dir, folder / "b", seed=2, rank=2)  # padded to MAX_RANK
    build_tiny_lora(tiny_pipeline_dir, folder / "big", seed=3, rank=2 * MAX_RANK)
    wide = (*TARGETS, "ff.net.2")  # also the feed-forward layers: more than slot 0 holds
    build_tiny_lora(tiny_pipeline_dir, folder / "wide", seed=4, targets=wide)
    build_tiny_lora(tiny_pipeline_dir, folder / "sdxl-like", seed=5, cross_attention_dim=48)
    return folder


def start(tiny_pipeline_dir: Path, lora_dir: Path) -> Service:
    settings = Settings(
        model=str(tiny_pipeline_dir),
        device="cpu",
        lora_dir=lora_dir,
        max_wait_ms=0,
        max_loras=3,
        lora_cache_max_count=3,
        lora_max_rank=MAX_RANK,
        result_cache_mb=0,  # every request reaches the pipeline
    )
    return Service.from_settings(settings).start()


@pytest.fixture(scope="module")
def eager(tiny_pipeline_dir: Path, lora_dir: Path) -> Iterator[Service]:
    service = start(tiny_pipeline_dir, lora_dir)
    yield service
    service.stop()


@pytest.fixture(scope="module")
def compiled(tiny_pipeline_dir: Path, lora_dir: Path) -> Iterator[Service]:
    import torch

    torch._dynamo.reset()
    service = start(tiny_pipeline_dir, lora_dir)
    model = service.model
    model.pipe.unet.compile(backend=BACKEND)
    model.lora.attach(model.pipe, model.name, compiled=True)
    yield service
    service.stop()
    torch._dynamo.reset()


def pixels(service: Service, *loras: tuple[str, float]) -> np.ndarray:
    from PIL import Image

    request: dict[str, Any] = {**REQUEST, "loras": [{"ref": r, "scale": s} for r, s in loras]}
    data = service.generate(request).images[0].data
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def graphs() -> int:
    """Graphs dynamo has compiled so far (a recompilation adds one)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def test_switching_adapters_never_recompiles(compiled: Service, eager: Service) -> None:
    a, b = ("local:a", 1.0), ("local:b", 1.0)
    runs: list[tuple[tuple[str, float], ...]] = [
        (),
        (a,),  # creates slot 0: the one recompilation a single-adapter request costs
        (b,),
        (a,),
        (("local:a", 0.5),),
        (),
        (a, ("local:b", 0.5)),  # creates slot 1: one more
        (b, ("local:a", 0.7)),
        (a,),
        (),
    ]
    counts = []
    for loras in runs:
        image = pixels(compiled, *loras)
        counts.append(graphs())
        reference = pixels(eager, *loras)
        assert np.abs(image - reference).max() <= TOLERANCE, loras
    assert counts[2:6] == [counts[1]] * 4, counts  # B, back to A, a new scale, none: no new graph
    assert counts[7:] == [counts[6]] * 3, counts
    assert counts[1] > counts[0] and counts[6] > counts[5]  # the counter does count
    assert compiled.model.lora.slots.held == ["local:a", "local:a"]  # the last two requests
    assert compiled.model.adapters.cache.stats.misses == 2  # tensors read once each


def test_adapters_change_pixels_by_far_more_than_the_tolerance(compiled: Service) -> None:
    base = pixels(compiled)
    a = pixels(compiled, ("local:a", 1.0))
    b = pixels(compiled, ("local:b", 1.0))
    for one, other in ((base, a), (base, b), (a, b)):
        assert np.abs(one - other).max() > 8 * TOLERANCE


def test_an_adapter_above_the_maximum_rank_is_refused_at_validation(compiled: Service) -> None:
    before = graphs()
    request = {**REQUEST, "loras": [{"ref": "local:big"}]}
    with pytest.raises(InvalidRequest) as refused:
        compiled.job(request)
    assert refused.value.field == "loras"
    message = refused.value.message
    assert "'local:big' has rank 8, above LORA_MAX_RANK=4" in message
    assert "raise LORA_MAX_RANK" in message
    assert graphs() == before
    assert "local:big" not in [entry["ref"] for entry in compiled.info()["loras"]]


def test_the_plain_adapter_api_takes_the_same_adapter(eager: Service) -> None:
    """LORA_MAX_RANK binds only a compiled model: without TORCH_COMPILE nothing changes."""
    assert eager.model.lora.slots is None
    assert pixels(eager, ("local:big", 1.0)).shape == (64, 64, 3)


def test_text_encoder_adapters_are_refused_for_hot_swapping(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from inference.models.diffusers.hotswap import check_file

    path = tmp_path / "te.safetensors"
    save_file({"text_encoder.q_proj.lora_A.weight": torch.zeros(2, 8)}, str(path))
    with pytest.raises(InvalidRequest, match="'local:te' has text-encoder weights"):
        check_file("local:te", path, MAX_RANK)
    save_file({"unet.to_q.lora_A.weight": torch.zeros(2, 8)}, str(path))
    check_file("local:te", path, MAX_RANK)  # the denoiser only: accepted


def test_an_adapter_wider_than_its_slot_fails_alone(compiled: Service, eager: Service) -> None:
    pixels(compiled, ("local:a", 1.0))  # slot 0 exists, holding an attention-only adapter
    with pytest.raises(InvalidRequest, match=r"'local:wide' does not fit the hot-swap slots"):
        pixels(compiled, ("local:wide", 1.0))
    assert compiled.engine.ready
    reference = pixels(eager, ("local:a", 1.0))
    assert np.abs(pixels(compiled, ("local:a", 1.0)) - reference).max() <= TOLERANCE


def test_over_http_the_refusal_is_a_422_naming_adapter_rank_and_setting(compiled: Service) -> None:
    import httpx

    from inference.http.app import create_app
    from tests.servers import serving_in_thread

    body = {**REQUEST, "loras": [{"ref": "local:big", "scale": 0.5}]}
    with serving_in_thread(create_app(compiled.settings, compiled)) as url:
        response = httpx.post(f"{url}/predict", json=body, timeout=60)
    assert response.status_code == 422, response.text
    assert "'local:big' has rank 8, above LORA_MAX_RANK=4" in response.text


def test_a_slot_that_fails_to_be_created_leaves_the_others_active(
    compiled: Service, eager: Service
) -> None:
    """A third adapter whose shapes do not fit fails while its slot is created; peft then
    falls back to the first slot alone, and the second would silently stop applying."""
    a, b = ("local:a", 1.0), ("local:b", 1.0)
    pixels(compiled, a, b)  # slots 0 and 1
    with pytest.raises(InvalidRequest, match=r"'local:sdxl-like' does not fit"):
        pixels(compiled, a, b, ("local:sdxl-like", 1.0))
    reference = pixels(eager, a, b)
    assert np.abs(pixels(compiled, a, b) - reference).max() <= TOLERANCE


def test_validation_fetches_an_adapter_once_and_a_loaded_one_not_at_all(
    compiled: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As without hot-swapping: a fetch of a hub adapter asks the Hub whether the file changed
    (a round trip), which must not be paid twice per new adapter nor on every request."""
    sources = compiled.model.lora.adapters.sources
    fetched: list[str] = []
    real = sources.fetch

    def fetch(ref: str) -> Path:
        fetched.append(ref)
        return real(ref)

    monkeypatch.setattr(sources, "fetch", fetch)
    pixels(compiled, ("local:a", 1.0))  # loaded (the LRU's newest) from here on
    fetched.clear()
    compiled.job({**REQUEST, "loras": [{"ref": "local:a"}]})
    assert fetched == []
    with pytest.raises(InvalidRequest, match="above LORA_MAX_RANK"):
        compiled.job({**REQUEST, "loras": [{"ref": "local:big"}]})
    assert fetched == ["local:big"]


def test_a_down_matrix_that_is_no_matrix_is_refused_not_a_500(tmp_path: Path) -> None:
    """The rank is a down matrix's first dimension: a client's file with a scalar there is
    refused by name (it raised IndexError, a 500, while the request was validated)."""
    import torch
    from safetensors.torch import save_file

    from inference.models.diffusers.hotswap import check_file

    path = tmp_path / "scalar.safetensors"
    save_file({"unet.to_q.lora_A.weight": torch.tensor(1.0)}, str(path))
    with pytest.raises(InvalidRequest, match=r"'local:s' is not a LoRA: .*has shape \[\]"):
        check_file("local:s", path, MAX_RANK)
