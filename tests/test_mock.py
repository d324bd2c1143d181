"""The mock model: deterministic, seed- and prompt-sensitive, batch-independent, O(steps x px)."""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.codec import decode, encode
from inference.errors import ModelLoadError
from inference.models.mock import MockModel, NoiseDrawer, normal_quantiles, prompt_pattern
from inference.models.mock.mock_weights import DEFAULT_WEIGHTS
from inference.schema import Job


def job(prompt: str = "a red fox", seed: int = 42, weight: float = 0.7, **kw: object) -> Job:
    fields = {"negative_prompt": "", "steps": 20, "width": 64, "height": 48, "output_format": "png"}
    fields.update({"seeds": (seed,), **kw})
    return Job(prompt=prompt, prompt_weight=weight, **fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def model() -> MockModel:
    m = MockModel()
    m.load()
    return m


def run(model: MockModel, *jobs: Job) -> list[np.ndarray]:
    return [img for images in model.generate(list(jobs)) for img in images]


def test_default_weights_are_embedded(model: MockModel) -> None:
    assert model.weights == {"gamma": 0.82, "beta": 0.15} == DEFAULT_WEIGHTS


def test_output_shape_and_dtype(model: MockModel) -> None:
    (image,) = run(model, job())
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8


def test_same_request_gives_the_same_png_bytes(model: MockModel) -> None:
    fresh = MockModel()
    fresh.load()
    first = encode(run(model, job())[0], "png")
    assert encode(run(model, job())[0], "png") == first
    assert encode(run(fresh, job())[0], "png") == first


#: The quick-start request's pixels ({"seed": 42, "prompt_weight": 0.7}, defaults 256x256, 20
#: steps). Any machine, any torch the project supports, must reproduce them.
QUICK_START_SHA256 = "e8769ac51f68ee288abff79be879741146a5c0feb57700856a2a2f65fe592d4a"
#: Sizes and seeds where torch.randn's AVX2 and generic CPU kernels gave different pixels.
PORTABILITY_CASES = [("a fox", 2, 200, 136), ("a fox", 3, 256, 256), ("", 42, 256, 256)]


def test_the_quick_start_image_is_pinned(model: MockModel) -> None:
    (image,) = run(model, job("", seed=42, weight=0.7, width=256, height=256))
    assert hashlib.sha256(image.tobytes()).hexdigest() == QUICK_START_SHA256


def readme_text_to_image(seed: int, steps: int, height: int, width: int) -> np.ndarray:
    """The README's text-to-image formula for an empty prompt (P("") = 0, so D = 0), written
    here in numpy from the README's words: an independent check beside the pinned hash, which
    the package's own code produced. Only the random integers come from torch (the README's
    source of randomness: a CPU ``torch.Generator`` seeded with the seed, ``random_()`` on int32).
    """
    gamma, beta = 0.82, 0.15
    normal = statistics.NormalDist()
    quantiles = np.array(
        [normal.inv_cdf((k + 0.5) / 32768) for k in range(32768)], dtype=np.float64
    ).astype(np.float32)
    generator = torch.Generator().manual_seed(seed)
    count = 3 * height * width

    def eps() -> np.ndarray:
        words = torch.empty(count // 2, dtype=torch.int32).random_(generator=generator).numpy()
        halves = words.astype("<i4").view("<u2")  # each 32-bit value: two 16-bit halves
        return quantiles[halves & 0x7FFF].reshape(3, height, width)

    x = eps()
    for t in range(1, steps + 1):
        sigma = 1.0 - 0.5 * (t - 1) / max(steps - 1, 1)
        x = x * np.float32(gamma) + eps() * np.float32(beta * sigma)  # the D term is 0
    pixels = np.clip(np.floor(x * np.float32(64.0) + np.float32(128.0)), 0, 255)
    return pixels.astype(np.uint8).transpose(1, 2, 0)


@pytest.mark.parametrize(
    ("seed", "steps", "height", "width"),
    [(42, 20, 256, 256), (7, 1, 48, 64), (123456789, 3, 136, 200)],
)
def test_text_to_image_follows_the_readme_formula(
    model: MockModel, seed: int, steps: int, height: int, width: int
) -> None:
    expected = readme_text_to_image(seed, steps, height, width)
    for weight in (0.0, 0.7):  # an empty prompt: the weight cannot matter
        fields = {"steps": steps, "width": width, "height": height}
        (image,) = run(model, job("", seed=seed, weight=weight, **fields))
        assert np.array_equal(image, expected)
    if (seed, steps, height, width) == (42, 20, 256, 256):  # the quick start: the pinned hash
        assert hashlib.sha256(expected.tobytes()).hexdigest() == QUICK_START_SHA256


def test_pixels_do_not_depend_on_the_cpus_vector_instructions(model: MockModel) -> None:
    """The same images with torch's AVX2 kernels off, as on ARM or an older x86 CPU."""
    script = textwrap.dedent(
        f"""
        import hashlib
        from inference.models.mock import MockModel
        from inference.schema import Job
        model = MockModel()
        model.load()
        for prompt, seed, width, height in {PORTABILITY_CASES!r}:
            job = Job(
                prompt=prompt, negative_prompt="", seeds=(seed,), prompt_weight=0.7, steps=20,
                width=width, height=height, output_format="png",
            )
            print(hashlib.sha256(model.generate([job])[0][0].tobytes()).hexdigest())
        """
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    here = [
        hashlib.sha256(run(model, job(p, seed=s, width=w, height=h))[0].tobytes()).hexdigest()
        for p, s, w, h in PORTABILITY_CASES
    ]
    assert proc.stdout.split() == here


def test_noise_is_standard_normal() -> None:
    import torch

    table = normal_quantiles()
    assert abs(table.mean().item()) < 1e-6 and abs(table.std().item() - 1) < 1e-3
    assert (table[1:] > table[:-1]).all()  # strictly increasing quantiles
    noise = torch.empty(3, 256, 256)
    NoiseDrawer(tuple(noise.shape)).draw(torch.Generator().manual_seed(3), noise)
    assert abs(noise.mean().item()) < 0.01 and abs(noise.std().item() - 1) < 0.01
    assert len(noise.unique()) > 30_000  # both halves of each random integer are used


def test_different_seeds_give_different_images(model: MockModel) -> None:
    a, b = run(model, job(seed=1)), run(model, job(seed=2))
    assert not np.array_equal(a[0], b[0])
    assert np.abs(a[0].astype(int) - b[0].astype(int)).mean() > 2  # visibly, not one pixel


def test_batched_equals_single_byte_for_byte(model: MockModel) -> None:
    jobs = [
        job("a red fox", seed=7, weight=0.7),
        job("a blue whale", seed=8, weight=3.0, negative_prompt="blur"),
        job("", seed=9, weight=0.0),
        job("a", seed=10, weight=1.5, seeds=(10, 11, 12)),
    ]
    batched = run(model, *jobs)
    solo = [img for j in jobs for img in run(model, j)]
    assert len(batched) == len(solo) == 6
    for b, s in zip(batched, solo, strict=True):
        assert encode(b, "png") == encode(s, "png")


def test_image_i_of_a_request_equals_a_solo_run_with_seed_plus_i(model: MockModel) -> None:
    multi = run(model, job("fox", weight=1.0, seeds=(100, 101)))
    assert np.array_equal(multi[1], run(model, job("fox", seed=101, weight=1.0))[0])


def test_zero_weight_is_prompt_independent(model: MockModel) -> None:
    a = run(model, job("a red fox", weight=0.0))[0]
    b = run(model, job("a cathedral at night", weight=0.0, negative_prompt="x"))[0]
    assert np.array_equal(a, b)


def test_prompts_give_different_images(model: MockModel) -> None:
    assert not np.array_equal(run(model, job("fox"))[0], run(model, job("whale"))[0])


def test_larger_weight_moves_the_image_toward_the_prompt_pattern(model: MockModel) -> None:
    pattern = prompt_pattern("a red fox", 48, 64).permute(1, 2, 0).numpy().ravel()

    def correlation(weight: float) -> float:
        image = run(model, job("a red fox", weight=weight))[0].astype(float).ravel() - 128
        return float(np.corrcoef(image, pattern)[0, 1])

    values = [correlation(w) for w in (0.0, 0.25, 0.7, 2.0)]
    assert abs(values[0]) < 0.05
    assert values == sorted(values) and values[-1] > 0.9


def test_pattern_of_empty_text_is_zero_and_others_are_bounded() -> None:
    assert not prompt_pattern("", 8, 8).any()
    p = prompt_pattern("anything", 64, 64)
    assert p.shape == (3, 64, 64) and p.min() >= -1 and p.max() <= 1 and p.std() > 0.1


def test_steps_change_the_image(model: MockModel) -> None:
    assert not np.array_equal(run(model, job(steps=2))[0], run(model, job(steps=20))[0])


def test_png_round_trips(model: MockModel) -> None:
    image = run(model, job())[0]
    assert np.array_equal(decode(encode(image, "png")), image)


def test_weights_from_json_and_safetensors_override(tmp_path: Path, model: MockModel) -> None:
    import torch
    from safetensors.torch import save_file

    (tmp_path / "w.json").write_text(json.dumps({"gamma": 0.5, "beta": 0.0}))
    save_file(
        {"gamma": torch.tensor(0.6), "beta": torch.tensor(0.1)}, str(tmp_path / "w.safetensors")
    )
    for name, expected in (("w.json", 0.5), ("w.safetensors", 0.6)):
        m = MockModel(tmp_path / name)
        m.load()
        assert m.weights is not None and m.weights["gamma"] == pytest.approx(expected)
    custom = MockModel(tmp_path / "w.json")
    custom.load()
    assert not np.array_equal(run(custom, job())[0], run(model, job())[0])


@pytest.mark.parametrize(
    ("content", "text"),
    [
        (None, "does not exist; point WEIGHTS_PATH (or Cog's weights) at a JSON"),
        ("{not json", "cannot read mock weights"),
        ('{"gamma": 0.5}', "lacks keys ['beta']"),
        ('{"gamma": 1.5, "beta": 0.1}', "need 0 <= gamma < 1"),
        ('{"gamma": "x", "beta": 0.1}', """'gamma' must be a finite number, got "x"; point"""),
        ('{"gamma": null, "beta": 0.1}', "'gamma' must be a finite number, got null"),
        ('{"gamma": true, "beta": 0.1}', "'gamma' must be a finite number, got true"),
        ('{"gamma": 0.5, "beta": [1]}', "'beta' must be a finite number, got [1]"),
        ('{"gamma": 0.5, "beta": Infinity}', "Infinity is not a finite number"),
        ("[0.5, 0.1]", "must hold a JSON object, got list"),
    ],
)
def test_bad_weights_files_are_refused_naming_the_path(
    tmp_path: Path, content: str | None, text: str
) -> None:
    path = tmp_path / "weights.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ModelLoadError, match="weights") as info:
        MockModel(path).load()
    assert text in str(info.value) and str(path) in str(info.value)


def test_truncated_safetensors_and_pickles_are_refused_naming_the_file(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    whole = tmp_path / "w.safetensors"
    save_file({"gamma": torch.tensor(0.6), "beta": torch.tensor(0.1)}, str(whole))
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(whole.read_bytes()[:-5])
    pickle_file = tmp_path / "w.pt"
    torch.save({"gamma": 0.5, "beta": 0.1}, pickle_file)
    for path, text in (
        (truncated, "not a valid safetensors file, truncated or corrupt"),
        (pickle_file, "is a pickle, which can run code when loaded"),
    ):
        with pytest.raises(ModelLoadError) as info:
            MockModel(path).load()
        assert text in info.value.message and str(path) in info.value.message
        assert "'gamma' (0 <= gamma < 1)" in info.value.message  # the fix


def test_prompt_patterns_cache_stays_small_under_unique_prompts() -> None:
    # Each cached pattern is a full 3 x H x W tensor: unique prompts must not grow memory.
    from inference.models.mock import prompt_pattern

    for i in range(40):
        prompt_pattern(f"unique prompt {i}", 64, 64)
    assert prompt_pattern.cache_info().currsize <= 8


def test_the_readme_picture_is_what_the_quick_start_writes() -> None:
    """README.md shows docs/assets/example.png as the quick start's fox.png, byte for byte."""
    from pathlib import Path

    from inference.service import Service
    from inference.settings import Settings

    service = Service(MockModel(), Settings(ui=False)).start()
    try:
        result = service.generate(
            {"prompt": "a red fox in the snow", "seed": 42, "width": 512, "height": 512}
        )
    finally:
        service.stop()
    picture = Path(__file__).parent.parent / "docs" / "assets" / "example.png"
    assert result.images[0].data == picture.read_bytes()
