"""Your own model class: loaded from MODEL=package.module:Class or an entry point, checked
against the protocol at start, and isolated like the built-in models when it misbehaves."""

from __future__ import annotations

import sys
import textwrap
import threading
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import httpx
import pytest

from inference import cli
from inference.codec import decode
from inference.errors import ModelLoadError
from inference.http.app import create_app
from inference.models import build_model, custom
from inference.service import Service
from inference.settings import Settings
from tests.servers import serving_in_thread

MODULE = "byo_models"
SOURCE = '''
import threading
import numpy as np
from inference.schema import Defaults

RELEASE = threading.Event()


class FlatModel:
    """Image i of a job is flat: every pixel (seed % 256, steps, len(prompt))."""

    name = "flat"
    size_multiple = 8
    defaults = Defaults(steps=3, prompt_weight=1.0, width=64, height=64)

    @classmethod
    def from_settings(cls, settings):
        model = cls()
        model.weights = settings.weights_path
        return model

    def load(self):
        self.loaded = True

    def check(self, job):
        pass

    def batch_key(self, job):
        return (job.width, job.height)

    def generate(self, jobs, progress=None):
        out = []
        for job in jobs:
            images = []
            for seed in job.seeds:
                image = np.empty((job.height, job.width, 3), np.uint8)
                image[...] = (seed % 256, job.steps, len(job.prompt))
                images.append(image)
            out.append(images)
        return out


class Misbehaving(FlatModel):
    """Raises, returns the wrong shape or hangs, as the prompt says."""

    def generate(self, jobs, progress=None):
        prompts = {job.prompt for job in jobs}
        if "raise" in prompts:
            raise RuntimeError("a bug in your own model")
        if "hang" in prompts:
            RELEASE.wait(30)
        out = super().generate(jobs, progress)
        if "shape" in prompts:
            return [[image[:, :, :2] for image in images] for images in out]
        return out


class NoGenerate:
    name = "broken"
    size_multiple = 8
    defaults = Defaults(steps=3, prompt_weight=1.0, width=64, height=64)

    def load(self): ...
    def check(self): ...
    def batch_key(self, job): ...


class BadAttributes(FlatModel):
    name = ""
    size_multiple = 3
    defaults = {"steps": 3}

    def generate(self, jobs):
        return []


class FailsToBuild(FlatModel):
    @classmethod
    def from_settings(cls, settings):
        raise ValueError("needs WEIGHTS_PATH")
'''


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    folder = tmp_path_factory.mktemp("byo")
    (folder / f"{MODULE}.py").write_text(textwrap.dedent(SOURCE))
    sys.path.insert(0, str(folder))
    import byo_models  # type: ignore[import-not-found]

    yield byo_models
    sys.path.remove(str(folder))
    sys.modules.pop(MODULE, None)


def test_a_class_path_serves_your_class_built_from_the_settings(models: object) -> None:
    settings = Settings(model=f"{MODULE}:FlatModel", weights_path="w.bin", max_wait_ms=0)
    service = Service.from_settings(settings).start()
    assert service.model.weights == Path("w.bin")  # from_settings saw the settings
    result = service.generate({"prompt": "abc", "seed": 300, "num_outputs": 2})
    pixels = [decode(image.data)[0, 0].tolist() for image in result.images]
    assert pixels == [[44, 3, 3], [45, 3, 3]]  # seeds 300 and 301, 3 steps, 3 characters
    info = service.info()
    assert info["model"] == "flat" and info["defaults"]["width"] == 64
    assert info["safety_checker"] == "unknown"  # it does not say
    service.stop()


def test_an_entry_point_name_serves_the_class_it_points_to(
    models: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    point = EntryPoint(name="flat", value=f"{MODULE}:FlatModel", group=custom.ENTRY_POINT_GROUP)

    def entry_points(group: str, name: str) -> list[EntryPoint]:
        assert group == "diffusion_serve.models"
        return [point] if name == "flat" else []

    monkeypatch.setattr(custom, "entry_points", entry_points)
    assert type(build_model(Settings(model="flat"))).__name__ == "FlatModel"
    assert custom.find_class("not-installed") is None  # a hub id without a slash, say


@pytest.mark.parametrize(
    ("name", "named"),
    [
        ("NoGenerate", ["missing method generate(jobs, progress=None)", "check() cannot"]),
        (
            "BadAttributes",
            [
                "'name' must be a non-empty str, got str ''",
                "'size_multiple' must be an int >= 8, got int 3",
                "'defaults' must be an inference.schema.Defaults, got dict",
                "generate(jobs) cannot be called as the engine calls it",
            ],
        ),
        ("FailsToBuild", ["FailsToBuild.from_settings(settings) failed: ValueError: needs"]),
        ("Nope", ["module 'byo_models' has no class 'Nope'"]),
    ],
)
def test_a_class_that_breaks_the_protocol_fails_at_start_naming_what_is_missing(
    models: object, name: str, named: list[str]
) -> None:
    with pytest.raises(ModelLoadError) as raised:
        build_model(Settings(model=f"{MODULE}:{name}"))
    for part in named:
        assert part in str(raised.value)


def test_the_server_refuses_to_start_on_a_broken_class_in_one_line(
    models: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["serve", "--model", f"{MODULE}:NoGenerate"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: byo_models:NoGenerate does not implement the model protocol")
    assert error.count("\n") == 1
    assert cli.main(["serve", "--model", "no_such_package.models:Model"]) == 1
    assert "cannot import 'no_such_package.models'" in capsys.readouterr().err


def test_a_class_that_raises_returns_a_wrong_shape_or_hangs_fails_only_its_request(
    models: object,
) -> None:
    settings = Settings(model=f"{MODULE}:Misbehaving", request_timeout_s=1, max_wait_ms=0)
    service = Service.from_settings(settings).start()
    release: threading.Event = models.RELEASE  # type: ignore[attr-defined]
    with serving_in_thread(create_app(settings, service)) as url:

        def predict(prompt: str) -> httpx.Response:
            return httpx.post(f"{url}/predict", json={"prompt": prompt}, timeout=30)

        raised = predict("raise")
        assert raised.status_code == 500 and raised.json()["error"]["type"] == "model_error"
        assert "bug" not in raised.text  # details stay in the server log
        shape = predict("shape")
        assert shape.status_code == 500 and "expected uint8 (64, 64, 3)" in shape.text
        assert predict("fine").status_code == 200
        hung = predict("hang")
        assert hung.status_code == 504 and "REQUEST_TIMEOUT_S" in hung.text
        assert httpx.get(f"{url}/health").status_code == 200  # the server still answers
        release.set()  # the hung call returns; the worker takes the next batch
        assert predict("fine again").status_code == 200
    assert service.engine.stats.failed_batches == 2
    service.stop()
