"""Cold start split in two: weights into CPU memory first (Modal: before the memory snapshot),
then onto the device (after restore). The tiny pipeline stands in for a real one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")

from inference.models.diffusers import DiffusersModel
from tests.test_diffusers import job
from tests.test_modal import SMALL, run_deploy


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_preload_reads_weights_on_the_host_and_load_only_moves_them(
    tiny_pipeline_dir: Path,
) -> None:
    split = DiffusersModel(str(tiny_pipeline_dir), device="cpu", dtype="float32")
    assert split.preload() is True
    assert split.pipe is None and split.device is None  # nothing on a device yet
    assert split._host_pipe is not None
    split.load()
    assert split.pipe is not None and split._host_pipe is None and split.device == "cpu"

    direct = DiffusersModel(str(tiny_pipeline_dir), device="cpu", dtype="float32")
    direct.load()
    ((a,),) = split.generate([job(seeds=(5,))])
    ((b,),) = direct.generate([job(seeds=(5,))])
    assert np.array_equal(a, b)  # the split changes no pixel


def test_preload_waits_for_the_device_when_the_dtype_depends_on_it(
    tiny_pipeline_dir: Path,
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a visible GPU lets DTYPE=auto resolve before the snapshot")
    model = DiffusersModel(str(tiny_pipeline_dir), device="cuda", dtype="auto")
    assert model.preload() is False and model._host_pipe is None


def test_the_modal_class_preloads_before_the_snapshot(tiny_pipeline_dir: Path) -> None:
    """``.local()`` runs the snap=True hook, then the snap=False one, as a restore would."""
    proc = run_deploy(
        f"""
        obj = deploy.Model()
        out = obj.generate.local({SMALL!r})
        print(json.dumps({{"png": out["images"][0]["data"][:8].hex()}}))
        obj.web.local().state.service.stop()
        """,
        env={
            "MODEL": str(tiny_pipeline_dir),
            "DEVICE": "cpu",
            "DTYPE": "float32",
            "LOG_LEVEL": "info",
        },
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "weights in CPU memory before the snapshot" in proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["png"] == "89504e470d0a1a0a"
