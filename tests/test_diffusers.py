"""The diffusers backend on a tiny random Stable Diffusion pipeline, loaded by path.

The pipeline is built once per session (``tiny_pipeline_dir`` in conftest) and saved with
``save_pretrained``; every test loads it through the real loading code, so what runs here is
what runs for a downloaded checkpoint, minus the size.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import pickle
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, get_args

import numpy as np
import pytest

pytest.importorskip("diffusers")

from PIL import Image

from inference.errors import InvalidRequest, ModelLoadError, RequestTimeout
from inference.models import build_model
from inference.models.diffusers import DiffusersModel
from inference.models.diffusers.pipelines import (
    SCHEDULERS,
    check_dtype,
    model_defaults,
    native_size,
    pick_dtype,
    size_multiple,
)
from inference.schema import Defaults, GenerateRequest, Job, Scheduler
from inference.service import Service
from inference.settings import Settings
from inference.validation import Validator
from inference.weights import check_safetensors, download_weights

#: diffusers' schedulers call np.array() on tensors; numpy 2 warns about it on every call.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
#: uint8 levels a batched image may differ from its solo run (float rounding in batched matmuls).
BATCH_TOLERANCE = 2


def job(seeds: tuple[int, ...] = (1,), **fields: Any) -> Job:
    values: dict[str, Any] = {
        "prompt": "a red cat",
        "negative_prompt": "",
        "seeds": seeds,
        "prompt_weight": 7.5,
        "steps": 2,
        "width": 64,
        "height": 64,
        "output_format": "png",
    }
    values.update(fields)
    return Job(**values)


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine: OpenMP threads spinning against other test
    processes made each call ~15x slower than one thread (1.7 s vs 0.12 s measured)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model(tiny_pipeline_dir: Path) -> DiffusersModel:
    loaded = DiffusersModel(str(tiny_pipeline_dir))
    loaded.load()
    return loaded


@pytest.fixture
def tiny_copy(tiny_pipeline_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny pipeline that a test may damage."""
    return Path(shutil.copytree(tiny_pipeline_dir, tmp_path / "copy"))


@pytest.fixture
def tiny_service(tiny_pipeline_dir: Path) -> Iterator[Service]:
    svc = Service.from_settings(Settings(model=str(tiny_pipeline_dir), max_wait_ms=0)).start()
    yield svc
    svc.stop()


# -- the tiny pipeline itself -----------------------------------------------------------------


def test_tiny_pipeline_is_safetensors_with_a_matching_tokenizer(tiny_pipeline_dir: Path) -> None:
    index = json.loads((tiny_pipeline_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    weights = sorted(
        p.relative_to(tiny_pipeline_dir).as_posix()
        for p in tiny_pipeline_dir.rglob("*.safetensors")
    )
    assert weights == [
        "text_encoder/model.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    ]
    assert not [p for p in tiny_pipeline_dir.rglob("*") if p.suffix in (".bin", ".pt", ".ckpt")]
    encoder = json.loads((tiny_pipeline_dir / "text_encoder/config.json").read_text())
    tokenizer = json.loads((tiny_pipeline_dir / "tokenizer/tokenizer_config.json").read_text())
    assert tokenizer["model_max_length"] == encoder["max_position_embeddings"]
    assert {"vocab.json", "merges.txt"} <= {
        p.name for p in (tiny_pipeline_dir / "tokenizer").iterdir()
    }


# -- loading ----------------------------------------------------------------------------------


def test_build_model_picks_the_diffusers_backend_with_the_settings(tiny_pipeline_dir: Path) -> None:
    settings = Settings(model=str(tiny_pipeline_dir), scheduler="euler", dtype="float32")
    built = build_model(settings)
    assert isinstance(built, DiffusersModel)
    assert (built.name, built.default_scheduler, built.requested_dtype) == (
        str(tiny_pipeline_dir),
        "euler",
        "float32",
    )


def test_new_settings_are_typed_and_validated() -> None:
    from pydantic import ValidationError

    settings = Settings(dtype="bfloat16", scheduler="dpm++", torch_compile="1", hf_hub_offline="1")
    assert (settings.dtype, settings.scheduler, settings.torch_compile) == (
        "bfloat16",
        "dpm++",
        True,
    )
    assert settings.hf_hub_offline is True
    with pytest.raises(ValidationError, match="TORCH_COMPILE=1 needs a CUDA GPU, but DEVICE=cpu"):
        Settings(torch_compile=True, device="cpu")
    with pytest.raises(ValidationError, match="dtype"):
        Settings(dtype="float64")
    with pytest.raises(ValidationError, match="scheduler"):
        Settings(scheduler="k_euler")


def test_loads_on_cpu_in_float32_with_the_pipelines_own_defaults(model: DiffusersModel) -> None:
    import torch

    assert (model.device, model.dtype) == ("cpu", torch.float32)
    assert model.pipe.unet.dtype == torch.float32
    # StableDiffusionPipeline.__call__ defaults (7.5, 50 steps); 64 = UNet sample 32 x VAE 2.
    assert model.defaults == Defaults(steps=50, prompt_weight=7.5, width=64, height=64)
    assert model.size_multiple == 8
    assert model.compatible_schedulers() == list(SCHEDULERS)


def test_engine_defaults_and_start_up_timings(tiny_service: Service) -> None:
    assert tiny_service.validator.defaults == Defaults(
        steps=50, prompt_weight=7.5, width=64, height=64
    )
    assert tiny_service.engine.stats.load_s is not None and tiny_service.engine.stats.load_s > 0
    assert tiny_service.engine.stats.warmup_s is not None and tiny_service.engine.stats.warmup_s > 0


def test_defaults_respect_the_deployments_limits(tiny_pipeline_dir: Path) -> None:
    model = DiffusersModel(str(tiny_pipeline_dir))
    model.load()
    assert Validator(model, Settings(max_steps=20)).defaults.steps == 20


def test_a_missing_folder_names_the_path() -> None:
    with pytest.raises(ModelLoadError, match=r"'/no/such/pipeline' does not exist.*hub id"):
        DiffusersModel("/no/such/pipeline").load()


def test_a_folder_without_model_index_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no model_index.json.*save_pretrained"):
        DiffusersModel(str(tmp_path)).load()


def test_an_uncached_hub_id_offline_names_the_id_and_the_download_command() -> None:
    settings = Settings(model="nobody/no-such-model", model_revision="v1", hf_hub_offline=True)
    service = Service.from_settings(settings)
    with pytest.raises(ModelLoadError) as info:
        service.start()
    message = info.value.message
    assert "'nobody/no-such-model' at revision 'v1' is not in the Hugging Face cache" in message
    assert "python -m inference download nobody/no-such-model --revision v1" in message
    assert service.engine.phase == "failed" and service.engine.load_error == message


def fake_hub_cache(root: Path, repo: str, pipeline: Path, commit: str) -> Path:
    """Lay ``pipeline`` out as huggingface_hub's cache would after a download of ``repo``."""
    entry = root / f"models--{repo.replace('/', '--')}"
    shutil.copytree(pipeline, entry / "snapshots" / commit)
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(commit)
    return root


def test_a_cached_hub_id_loads_offline_at_its_pinned_revision(
    tiny_pipeline_dir: Path, tmp_path: Path
) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    cache = fake_hub_cache(tmp_path / "hub", "acme/tiny-sd", tiny_pipeline_dir, commit)
    assert download_weights("acme/tiny-sd", commit, cache, local_files_only=True) == (
        cache / "models--acme--tiny-sd" / "snapshots" / commit
    )
    pinned = DiffusersModel("acme/tiny-sd", revision=commit, offline=True, cache_dir=cache)
    pinned.load()
    assert pinned.defaults.width == 64
    unpinned = DiffusersModel("acme/tiny-sd", offline=True, cache_dir=cache)  # refs/main
    unpinned.load()
    other = DiffusersModel("acme/tiny-sd", revision="f" * 40, offline=True, cache_dir=cache)
    with pytest.raises(ModelLoadError, match="python -m inference download acme/tiny-sd"):
        other.load()


class _Tripwire:
    """Unpickling this touches a file: proof that a loader ran code from a pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


def test_pickle_only_weights_are_refused_without_being_unpickled(tiny_copy: Path) -> None:
    marker = tiny_copy.parent / "unpickled"
    (tiny_copy / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (tiny_copy / "unet" / "diffusion_pytorch_model.bin").write_bytes(
        pickle.dumps(_Tripwire(marker))
    )
    with pytest.raises(ModelLoadError) as info:
        DiffusersModel(str(tiny_copy)).load()
    assert "component 'unet'" in info.value.message
    assert "only pickle weights ['diffusion_pytorch_model.bin']" in info.value.message
    assert "safe_serialization=True" in info.value.message
    assert not marker.exists()


def test_a_component_without_weights_is_an_incomplete_download(tiny_copy: Path) -> None:
    (tiny_copy / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"component 'vae'.*no weights.*incomplete"):
        check_safetensors(tiny_copy)


def test_torch_compile_is_skipped_with_a_warning_off_cuda(
    tiny_pipeline_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    compiled = DiffusersModel(str(tiny_pipeline_dir), torch_compile=True, channels_last=True)
    with caplog.at_level(logging.WARNING, logger="inference.models.diffusers.pipelines"):
        compiled.load()
    assert "apply on CUDA only; ignored on cpu" in caplog.text
    assert compiled.generate([job(steps=1)])[0][0].shape == (64, 64, 3)


# -- request mapping --------------------------------------------------------------------------


def test_output_size_format_and_count(model: DiffusersModel) -> None:
    [images] = model.generate([job(seeds=(3, 4, 5), width=80, height=56)])
    assert len(images) == 3
    for pixels in images:
        assert pixels.shape == (56, 80, 3) and pixels.dtype == np.uint8
    assert pixels.std() > 0


def test_the_seed_fixes_the_image(model: DiffusersModel) -> None:
    [[a]] = model.generate([job(seeds=(11,))])
    [[b]] = model.generate([job(seeds=(11,))])
    [[c]] = model.generate([job(seeds=(12,))])
    assert np.array_equal(a, b)
    assert max_diff(a, c) > 10


def test_prompt_guidance_and_negative_prompt_reach_the_pipeline(model: DiffusersModel) -> None:
    [[base]] = model.generate([job()])
    [[prompt]] = model.generate([job(prompt="the blue sea")])
    [[negative]] = model.generate([job(negative_prompt="blurry")])
    [[guidance]] = model.generate([job(prompt_weight=1.0)])
    for other in (prompt, negative, guidance):
        assert not np.array_equal(base, other)


def test_a_batch_equals_its_solo_runs(model: DiffusersModel) -> None:
    jobs = [
        job(seeds=(1, 2), prompt="a red cat"),
        job(seeds=(7,), prompt="the sea at night", negative_prompt="blurry"),
        job(seeds=(9,), prompt=""),
    ]
    batched = model.generate(jobs)
    assert [len(images) for images in batched] == [2, 1, 1]
    for one, images in zip(jobs, batched, strict=True):
        for seed, pixels in zip(one.seeds, images, strict=True):
            [[solo]] = model.generate(
                [job(seeds=(seed,), prompt=one.prompt, negative_prompt=one.negative_prompt)]
            )
            assert max_diff(pixels, solo) <= BATCH_TOLERANCE


def test_jobs_that_cannot_share_a_call_have_different_keys(model: DiffusersModel) -> None:
    base = model.batch_key(job())
    assert model.batch_key(job(seeds=(5, 6), prompt="x", negative_prompt="y")) == base
    for change in (
        {"width": 72},
        {"height": 72},
        {"steps": 5},
        {"prompt_weight": 3.0},
        {"scheduler": "euler"},
    ):
        assert model.batch_key(job(**change)) != base, change
    with pytest.raises(ValueError, match="one batch_key"):
        model.generate([job(), job(steps=5)])


def test_every_api_scheduler_is_mapped() -> None:
    assert set(SCHEDULERS) == set(get_args(Scheduler))


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_each_scheduler_runs_and_reports_progress(model: DiffusersModel, name: str) -> None:
    steps: list[tuple[int, int]] = []
    [[pixels]] = model.generate([job(scheduler=name, steps=3)], lambda s, n: steps.append((s, n)))
    assert pixels.shape == (64, 64, 3)
    assert steps and steps[-1][0] == steps[-1][1]  # the last step reports done
    assert [s for s, _ in steps] == list(range(1, len(steps) + 1))


def test_the_scheduler_choice_changes_the_image(model: DiffusersModel) -> None:
    [[own]] = model.generate([job(steps=6)])
    [[ddim]] = model.generate([job(steps=6, scheduler="ddim")])  # the tiny pipeline's own
    [[euler]] = model.generate([job(steps=6, scheduler="euler_a")])
    assert np.array_equal(own, ddim)
    assert max_diff(own, euler) > 10
    assert type(model.pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    [[again]] = model.generate([job(steps=6)])  # the next call gets the model's own back
    assert np.array_equal(own, again)


def test_the_deployments_scheduler_setting_is_the_default(
    model: DiffusersModel, tiny_pipeline_dir: Path
) -> None:
    euler = DiffusersModel(str(tiny_pipeline_dir), scheduler="euler")
    euler.load()
    [[by_setting]] = euler.generate([job()])
    [[by_request]] = model.generate([job(scheduler="euler")])
    assert np.array_equal(by_setting, by_request)
    assert euler.batch_key(job()) == model.batch_key(job(scheduler="euler"))


def test_a_negative_prompt_the_pipeline_would_ignore_is_refused(model: DiffusersModel) -> None:
    """Without classifier-free guidance (prompt_weight <= 1, a turbo default) SD drops it."""
    with pytest.raises(InvalidRequest) as info:
        model.check(job(negative_prompt="blurry", prompt_weight=1.0))
    assert info.value.field == "negative_prompt"
    assert "ignores negative_prompt at prompt_weight 1" in info.value.message
    assert "raise prompt_weight or omit negative_prompt" in info.value.message
    model.check(job(negative_prompt="blurry", prompt_weight=1.5))  # guided: accepted


def test_auto_dtype_is_bf16_only_where_the_gpu_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """is_bf16_supported() is true by emulation on a T4 (7.5): that must give float16."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    for capability, expected in (((7, 5), torch.float16), ((8, 0), torch.bfloat16)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, c=capability: c)
        assert pick_dtype("auto", "cuda") == expected
    assert pick_dtype("auto", "cpu") == torch.float32


def test_weights_in_another_dtype_than_asked_fail_the_load(model: DiffusersModel) -> None:
    """What an old diffusers that ignores dtype= would do: float32 weights for a bf16 ask."""
    import torch

    with pytest.raises(ModelLoadError, match=r"loaded as torch\.float32, not the torch\.bfloat16"):
        check_dtype(model.pipe, torch.bfloat16, model.source)


def test_a_scheduler_of_another_family_is_refused_by_name(tiny_copy: Path) -> None:
    """A flow-matching model (SD3, FLUX) cannot sample with DDIM: say so before queueing."""
    index_path = tiny_copy / "model_index.json"
    index = json.loads(index_path.read_text())
    index["scheduler"] = ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    index_path.write_text(json.dumps(index))
    config_path = tiny_copy / "scheduler" / "scheduler_config.json"
    config_path.write_text(json.dumps({"_class_name": "FlowMatchEulerDiscreteScheduler"}))
    flow = DiffusersModel(str(tiny_copy))
    flow.load()
    assert flow.compatible_schedulers() == []
    with pytest.raises(InvalidRequest) as info:
        flow.check(job(scheduler="ddim"))
    assert info.value.field == "scheduler"
    assert "scheduler 'ddim' does not fit model" in info.value.message
    assert "FlowMatchEulerDiscreteScheduler" in info.value.message
    # The same mismatch as a deployment's SCHEDULER fails the start, naming the setting.
    with pytest.raises(ModelLoadError, match=r"SCHEDULER=euler does not fit .* no other sampler"):
        DiffusersModel(str(tiny_copy), scheduler="euler").load()


def test_sizes_off_the_models_multiple_are_refused_with_a_suggestion(
    tiny_pipeline_dir: Path,
) -> None:
    strict = DiffusersModel(str(tiny_pipeline_dir))
    strict.load()
    strict.size_multiple = 16  # what an SD3 or FLUX pipeline reports
    with pytest.raises(InvalidRequest) as info:
        strict.check(job(width=72))
    assert info.value.field == "width"
    assert info.value.message == (
        f"width must be a multiple of 16 for model {strict.name!r}, got 72 (try 64 or 80)"
    )
    with pytest.raises(InvalidRequest, match="height must be a multiple of 16"):
        strict.check(job(height=88))
    strict.check(job(width=80, height=96))


def test_the_engine_refuses_an_invalid_job_before_queueing(tiny_service: Service) -> None:
    tiny_service.model.size_multiple = 16  # type: ignore[attr-defined]
    with pytest.raises(InvalidRequest, match="width must be a multiple of 16"):
        tiny_service.generate(GenerateRequest(width=72, steps=1))
    assert tiny_service.engine.queue_depth == 0


def fake_pipe(**attributes: Any) -> Any:
    def __call__(prompt: str, guidance_scale: float = 3.5, num_inference_steps: int = 28) -> None:
        return None

    return SimpleNamespace(__call__=__call__, **attributes)


def test_size_rules_of_other_architectures() -> None:
    sd15 = fake_pipe(
        vae_scale_factor=8, unet=SimpleNamespace(config=SimpleNamespace(sample_size=64))
    )
    assert (size_multiple(sd15), native_size(sd15)) == (8, (512, 512))
    sd3 = fake_pipe(
        vae_scale_factor=8,
        default_sample_size=128,
        transformer=SimpleNamespace(config=SimpleNamespace(patch_size=2)),
    )
    assert (size_multiple(sd3), native_size(sd3)) == (16, (1024, 1024))
    flux = fake_pipe(vae_scale_factor=8, default_sample_size=128, _pack_latents=staticmethod(id))
    assert (size_multiple(flux), native_size(flux)) == (16, (1024, 1024))


def test_distilled_models_default_to_no_guidance_and_few_steps() -> None:
    pipe = fake_pipe(
        vae_scale_factor=8, unet=SimpleNamespace(config=SimpleNamespace(sample_size=64))
    )
    assert model_defaults(pipe, "stabilityai/sd-turbo") == Defaults(1, 0.0, 512, 512)
    assert model_defaults(pipe, "some/flux-dev") == Defaults(28, 3.5, 512, 512)


# -- through the engine -----------------------------------------------------------------------


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_concurrent_requests_share_a_call_and_match_their_solo_runs(
    tiny_pipeline_dir: Path,
) -> None:
    service = Service.from_settings(
        Settings(model=str(tiny_pipeline_dir), max_wait_ms=2000, max_batch_size=4)
    ).start()
    try:
        requests = [
            GenerateRequest(prompt=f"cat number {i}", seed=100 + i, steps=3) for i in range(4)
        ]
        results: list[Any] = [None] * 4

        def call(i: int) -> None:
            results[i] = service.generate(requests[i])

        threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert service.engine.stats.model_calls < 4  # at least two requests shared a call
        assert max(r.batch_size for r in results) > 1
        for request, result in zip(requests, results, strict=True):
            [[solo]] = service.model.generate([service.job(request)])
            assert result.model == str(tiny_pipeline_dir)
            assert max_diff(decode(result.images[0].data), solo) <= BATCH_TOLERANCE
    finally:
        service.stop()


def test_a_timed_out_batch_stops_between_steps_and_frees_the_engine(
    tiny_pipeline_dir: Path,
) -> None:
    settings = Settings(
        model=str(tiny_pipeline_dir), max_wait_ms=0, max_steps=150, request_timeout_s=1.5
    )
    service = Service.from_settings(settings).start()
    steps: list[int] = []
    service.engine.add_step_listener(lambda step, total: steps.append(total))
    try:
        slow = GenerateRequest(steps=150, width=128, height=128, num_outputs=4, seed=1)
        with pytest.raises(RequestTimeout, match="REQUEST_TIMEOUT_S"):
            service.generate(slow)
        deadline = time.monotonic() + 60
        while service.engine.stats.abandoned_batches + service.engine.stats.dropped_requests < 1:
            assert time.monotonic() < deadline, "the abandoned batch never stopped"
            time.sleep(0.05)
        assert len(steps) < 150  # stopped between steps, not after the last one
        result = service.generate(GenerateRequest(steps=2, seed=5))
        assert result.images[0].width == 64
        assert service.engine.stats.model_calls == 1
    finally:
        service.stop()


def test_a_cancelled_request_stops_its_batch_and_frees_the_engine(
    tiny_pipeline_dir: Path,
) -> None:
    settings = Settings(model=str(tiny_pipeline_dir), max_wait_ms=0, max_steps=150)
    service = Service.from_settings(settings).start()
    started = threading.Event()
    steps: list[int] = []

    def on_step(step: int, total: int) -> None:
        steps.append(step)
        started.set()

    service.engine.add_step_listener(on_step)

    async def scenario() -> None:
        slow = GenerateRequest(steps=150, width=128, height=128, num_outputs=4, seed=1)
        task = asyncio.create_task(service.submit(slow))
        assert await asyncio.to_thread(started.wait, 60)
        task.cancel()  # what the app does when the client disconnects
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(scenario())
        deadline = time.monotonic() + 60
        while service.engine.stats.abandoned_batches < 1:
            assert time.monotonic() < deadline, "the cancelled batch never stopped"
            time.sleep(0.05)
        assert max(steps) < 150
        result = service.generate(GenerateRequest(steps=2, seed=5, output_format="jpeg"))
        assert result.images[0].media_type == "image/jpeg"
        assert decode(result.images[0].data).shape == (64, 64, 3)
    finally:
        service.stop()


def test_the_benchmark_pipeline_has_sd15s_architecture() -> None:
    """Built on the meta device (no memory): the parameter counts of the published SD 1.5."""
    import torch

    from tools.tiny import sd15_models

    with torch.device("meta"):
        unet, vae, text_encoder = sd15_models()
    counts = [sum(p.numel() for p in m.parameters()) for m in (unet, vae, text_encoder)]
    assert counts == [859_520_964, 83_653_863, 123_060_480]


def test_download_command_offline_names_the_cache_and_a_folder_needs_none(
    tiny_pipeline_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from inference.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["download", "nobody/no-such-model", "--revision", "abc"]) == 1
    err = capsys.readouterr().err
    assert "'nobody/no-such-model' at revision 'abc' is not in the Hugging Face cache" in err
    assert main(["download", str(tiny_pipeline_dir)]) == 0
    assert "needs no download" in capsys.readouterr().err
