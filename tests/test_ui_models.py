"""The UI's model picker (issue 23) through gradio_client against a real server on the example
registry: ``/generate`` gains ``model`` as its optional last parameter, each choice is served
by its own version (the two ``draft`` versions draw different pixels), and a call that names
no model gets the default version, as the page's picker shows first. Without a registry the
API is unchanged (tests/test_ui.py pins it)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from inference.fleet import Fleet
from inference.settings import Settings
from inference.ui import model_choices
from tests.servers import ROOT, inference_server

pytest.importorskip("gradio_client")
from gradio_client import Client

EXAMPLE = ROOT / "examples" / "models.toml"
SHAPE = {"prompt": "a red fox", "seed": 3, "steps": 4, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with inference_server({"MODELS_FILE": str(EXAMPLE), "UI": "true"}) as base:
        yield base


def _ui(client: Client, **fields: Any) -> tuple[bytes, str]:
    gallery, seed_used, timings = client.predict(
        **SHAPE, randomize_seed=False, **fields, api_name="/generate"
    )
    assert seed_used == SHAPE["seed"]
    return Path(gallery[0]["image"]).read_bytes(), timings


def _api(url: str, model: str) -> bytes:
    response = httpx.post(f"{url}/predict", json={**SHAPE, "model": model}, timeout=60)
    assert response.status_code == 200, response.text
    return base64.b64decode(response.json()["images"][0]["data"])


def test_gradio_client_chooses_a_model(url: str) -> None:
    client = Client(url + "/ui/", verbose=False)
    endpoint = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    parameters = endpoint["/generate"]["parameters"]
    assert parameters[-1]["parameter_name"] == "model"
    assert parameters[-1]["parameter_has_default"]
    v1, timings_v1 = _ui(client, model="draft@v1")
    v2, timings_v2 = _ui(client, model="draft@v2")
    assert v1 != v2  # the two versions draw different pixels
    assert (v1, v2) == (_api(url, "draft@v1"), _api(url, "draft@v2"))
    assert "version `draft@v2`" in timings_v2 and "version `draft@v1`" in timings_v1
    # No model named: the default version, the picker's first choice.
    assert _ui(client)[0] == v1
    final, _ = _ui(client, model="final")
    assert final == _api(url, "final@v1")


def test_an_unknown_model_is_refused_listing_the_choices(url: str) -> None:
    client = Client(url + "/ui/", verbose=False)
    with pytest.raises(
        Exception, match=r"drafty is not in the list of choices: \['draft@v1', 'draft'"
    ):
        _ui(client, model="drafty")


def test_the_picker_lists_the_default_version_first_and_only_when_there_is_a_choice(
    tmp_path: Path,
) -> None:
    fleet = Fleet.from_settings(Settings(models_file=EXAMPLE))
    assert model_choices(fleet) == [
        "draft@v1",
        "draft",
        "draft@v2",
        "final",
        "final@v1",
    ]
    assert model_choices(Fleet.from_settings(Settings())) == []  # no registry: no picker
    single = tmp_path / "one.toml"
    single.write_text(
        '[[models]]\nname = "solo"\n  [[models.versions]]\n  name = "v1"\n  backend = "mock"\n'
    )
    assert model_choices(Fleet.from_settings(Settings(models_file=single))) == []
