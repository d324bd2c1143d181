"""GPU checks, opt in with ``pytest -m gpu`` on a CUDA machine (the default run deselects them).

The tiny random pipeline on CUDA in bfloat16: it runs there, and batching keeps each image
close to its solo run. The tolerance is diffusers' own for half precision (5e-2 of the range).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from inference.models.diffusers import DiffusersModel  # noqa: E402
from tests.test_diffusers import job, max_diff  # noqa: E402

HALF_PRECISION_TOLERANCE = 13  # of 255, about 5e-2


@pytest.fixture(scope="module")
def model(tiny_pipeline_dir: Path) -> DiffusersModel:
    loaded = DiffusersModel(str(tiny_pipeline_dir), device="cuda", dtype="bfloat16")
    loaded.load()
    return loaded


def test_the_tiny_pipeline_runs_on_cuda_in_bfloat16(model: DiffusersModel) -> None:
    assert model.device == "cuda" and model.dtype == torch.bfloat16
    ((image,),) = model.generate([job(seeds=(3,))])
    assert image.shape == (64, 64, 3) and image.std() > 0


def test_batched_images_stay_close_to_their_solo_runs(model: DiffusersModel) -> None:
    jobs = [job(seeds=(1, 2)), job(seeds=(3,), prompt="a blue dog")]
    batched = [image for images in model.generate(jobs) for image in images]
    solo = [
        model.generate([job(seeds=(1,))])[0][0],
        model.generate([job(seeds=(2,))])[0][0],
        model.generate([job(seeds=(3,), prompt="a blue dog")])[0][0],
    ]
    for together, alone in zip(batched, solo, strict=True):
        assert max_diff(together, alone) <= HALF_PRECISION_TOLERANCE
