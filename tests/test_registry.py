"""The registry of models and versions: its file, its problems, routing, live re-weighting."""

from __future__ import annotations

import math
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from inference.errors import InvalidRequest
from inference.models import build_model
from inference.models.mock import MockModel
from inference.registry import (
    IMPLICIT_NAME,
    InMemoryWeights,
    Registry,
    RegistryError,
    UnknownModel,
    VersionRef,
)
from inference.registry.routing import Split
from inference.schema import Job
from inference.settings import Settings
from tests.servers import ROOT

EXAMPLE = ROOT / "examples" / "models.toml"
#: Two mock versions of one model; a third model so that names must be chosen.
CANARY = """
[[models]]
name = "draft"
default = true
  [[models.versions]]
  name = "v1"
  backend = "mock"
  weight = 90
  [[models.versions]]
  name = "v2"
  backend = "mock"
  weight = 10
  [[models.versions]]
  name = "v3"
  backend = "mock"
  weight = 0

[[models]]
name = "final"
  [[models.versions]]
  name = "v1"
  backend = "mock"
"""


def registry_of(tmp_path: Path, text: str, seed: int = 1, **kwargs: object) -> Registry:
    path = tmp_path / "models.toml"
    path.write_text(text)
    settings = Settings(models_file=path)
    return Registry.from_settings(settings, rng=random.Random(seed), **kwargs)  # type: ignore[arg-type]


def problems_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(RegistryError) as caught:
        registry_of(tmp_path, text)
    return caught.value.problems


def within_binomial(count: int, n: int, p: float, z: float = 4.5) -> bool:
    """Whether ``count`` of ``n`` draws with probability ``p`` lies within z sigma of n*p (a
    false alarm at 4.5 sigma is about 1 in 150,000)."""
    return abs(count - n * p) <= z * math.sqrt(n * p * (1 - p))


def job(seed: int = 7) -> Job:
    return Job(
        prompt="a red fox",
        negative_prompt="",
        prompt_weight=0.7,
        steps=10,
        width=32,
        height=32,
        output_format="png",
        seeds=(seed,),
    )


# -- the example and the registry of one ------------------------------------------------------


def test_example_parses_into_models_versions_and_settings() -> None:
    registry = Registry.from_settings(Settings(models_file=EXAMPLE))
    assert list(registry.models) == ["draft", "final"] and not registry.implicit
    assert (registry.default_model, registry.default_version) == ("draft", None)
    draft = registry.models["draft"]
    assert draft.version_names == ["v1", "v2"]
    assert registry.weights("draft") == {"v1": 90.0, "v2": 10.0}
    v1, v2 = draft.versions
    assert v1.weights_path == ROOT / "examples" / "weights" / "draft-v1.json"
    assert v1.weights_path.is_file() and v2.weights_path and v2.weights_path.is_file()
    assert (v1.settings.model, v1.settings.weights_path) == ("mock", v1.weights_path)
    assert (v1.settings.max_batch_size, v2.settings.max_batch_size) == (8, 4)  # inherited, own
    (final,) = registry.models["final"].versions
    assert (final.settings.default_steps, final.settings.max_batch_size) == (40, 2)
    assert final.settings.max_wait_ms == 0.0 and final.weights_path is None
    assert registry.version(VersionRef("draft", "v2")) is v2


def test_example_versions_make_different_images() -> None:
    """Each version builds with today's ``build_model`` from its own settings; v1's file holds
    the embedded weights, so it draws the default mock's pixels and v2 other ones."""
    registry = Registry.from_settings(Settings(models_file=EXAMPLE))
    images = {}
    for version in registry.models["draft"].versions:
        model = build_model(version.settings)
        model.load()
        images[version.name] = model.generate([job()])[0][0]
    default = MockModel()
    default.load()
    assert np.array_equal(images["v1"], default.generate([job()])[0][0])
    assert not np.array_equal(images["v1"], images["v2"])


def test_without_a_file_the_registry_is_one_model_that_every_name_reaches() -> None:
    settings = Settings(max_batch_size=3)
    registry = Registry.from_settings(settings)
    assert registry.implicit and list(registry.models) == [IMPLICIT_NAME]
    (version,) = registry.models[IMPLICIT_NAME].versions
    assert version.settings is settings and (version.backend, version.kind) == ("mock", "mock")
    one = VersionRef(IMPLICIT_NAME, IMPLICIT_NAME)
    assert (
        registry.route(None) == one == registry.route("dall-e-3", "user") == registry.route("x@y")
    )


def test_models_file_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELS_FILE", str(EXAMPLE))
    assert Settings().models_file == EXAMPLE


# -- bad registries: one message per problem, all at once --------------------------------------


def model(name: str = "a", lines: str = "", *versions: str) -> str:
    """A [[models]] table with ``lines`` and ``versions`` (default: one mock version 'v1')."""
    return f'[[models]]\nname = "{name}"\n{lines}\n' + "".join(versions or (version(),))


def version(name: str = "v1", lines: str = "", backend: str = "mock") -> str:
    return f'[[models.versions]]\nname = "{name}"\nbackend = "{backend}"\n{lines}\n'


#: Problems in the one version of model 'a': its extra lines, and the message that names them.
BAD_VERSION_LINES = {
    "negative weight": ("weight = -1", "weight of 'v1' must be a finite number >= 0, got -1"),
    "NaN weight": ("weight = nan", "weight of 'v1' must be a finite number >= 0, got nan"),
    "unknown key": (
        "wieght = 3",
        "model 'a' version 'v1': unknown key 'wieght' (did you mean 'weight'?)",
    ),
    "default above limit": (
        "default_steps = 60\nmax_steps = 50",
        "DEFAULT_STEPS=60 exceeds MAX_STEPS=50",
    ),
    "setting out of range": (
        "max_batch_size = 0",
        "model 'a' version 'v1': max_batch_size = 0: Input should be greater than or equal to 1",
    ),
    "revision on a mock": (
        'revision = "abc"',
        "revision pins a hub id, but backend 'mock' is a mock",
    ),
}

BAD = {
    **{
        name: (model("a", "", version(lines=lines)), message)
        for name, (lines, message) in BAD_VERSION_LINES.items()
    },
    "unknown backend": (
        model("a", "", version(backend="mokc")),
        "backend 'mokc' is not a form a model can take (did you mean 'mock'?)",
    ),
    "all weights zero": (
        model("a", "", version("v1", "weight = 0"), version("v2", "weight = 0")),
        "model 'a': all weights are 0",
    ),
    "duplicate model": (
        model("a", "default = true") + model("A"),
        "model name 'A' is used twice ('a')",
    ),
    "duplicate version": (
        model("a", "", version("v1"), version("v1")),
        "model 'a': version name 'v1' is used twice",
    ),
    "no default": (
        model("a") + model("b"),
        "no model is the default for requests that name none; add default = true to one of "
        "'a', 'b'",
    ),
    "two defaults": (
        model("a", "default = true") + model("b", "default = true"),
        "models 'a', 'b' are all marked default; keep default on one",
    ),
    "pinned default missing": (
        model("a", 'default = "v2"'),
        "model 'a': default version 'v2' does not exist; its versions are 'v1'",
    ),
    "bad name": (model("a/b", "", version("v@1")), "name must be 1 to 64 letters"),
    "no versions": ('[[models]]\nname = "a"\n', "model 'a': needs one or more [[models.versions]]"),
    "no models": ("[model]\nname = 'a'\n", "unknown key 'model' (did you mean 'models'?)"),
    "not TOML": ("[[models]\n", "not valid TOML"),
}


@pytest.mark.parametrize("text, message", BAD.values(), ids=BAD.keys())
def test_each_bad_registry_is_named_without_a_traceback(
    tmp_path: Path, text: str, message: str
) -> None:
    problems = problems_of(tmp_path, text)
    assert any(message in problem for problem in problems), problems


def test_every_problem_of_a_registry_is_listed_at_once(tmp_path: Path) -> None:
    text = (
        model(
            "draft",
            'default = "v9"',
            version("v1", "wieght = 3", backend="mokc"),
            version("v1", "weight = -2"),
        )
        + model(
            "final",
            "default = true",
            version("a", "weight = nan"),
            version("b", 'weights_path = "x.json"', backend="stabilityai/sd-turbo"),
        )
        + model("Final", "", version("z", "weight = 0"))
    )
    problems = problems_of(tmp_path, text)
    expected = [
        "model 'draft' version 'v1': unknown key 'wieght' (did you mean 'weight'?)",
        "model 'draft' version 'v1': backend 'mokc' is not a form a model can take",
        "model 'draft': version name 'v1' is used twice",
        "model 'final': weight of 'a' must be a finite number >= 0, got nan",
        "model 'final' version 'b': weights_path is read by the mock and your own classes",
        "model 'Final': all weights are 0",
        "model name 'Final' is used twice ('final')",
        "models 'draft', 'final' are all marked default",
    ]
    for message in expected:
        assert sum(message in problem for problem in problems) == 1, (message, problems)
    assert sum("default version 'v9' does not exist" in p for p in problems) == 1
    assert len(problems) == 10, problems
    error = RegistryError(problems)
    assert isinstance(error, InvalidRequest) and len(error.errors) == 10


def test_a_missing_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"MODELS_FILE=.*: no such file"):
        Registry.from_settings(Settings(models_file=tmp_path / "nope.toml"))


# -- routing --------------------------------------------------------------------------------


def test_a_90_10_split_over_2000_routes_is_within_binomial_bounds(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, CANARY, seed=2026)
    counts = Counter(registry.route("draft").version for _ in range(2000))
    assert set(counts) == {"v1", "v2"}  # weight 0: never chosen by weight
    assert within_binomial(counts["v1"], 2000, 0.9), counts
    assert Counter(registry.route(None).version for _ in range(200)).keys() <= {"v1", "v2"}


def test_an_injected_rng_makes_routes_repeatable(tmp_path: Path) -> None:
    routes = [[registry_of(tmp_path, CANARY, seed=5).route("draft") for _ in range(50)]]
    routes.append([registry_of(tmp_path, CANARY, seed=5).route("draft") for _ in range(50)])
    assert routes[0] == routes[1]


def test_sticky_keys_are_stable_and_split_by_weight(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, CANARY, seed=1)
    other = registry_of(tmp_path, CANARY, seed=99)  # another process: its own random state
    keys = [f"user-{i}" for i in range(2000)]
    first = {key: registry.route("draft", key) for key in keys}
    assert all(
        registry.route("draft", key) == first[key] == other.route("draft", key) for key in keys
    )
    counts = Counter(ref.version for ref in first.values())
    assert set(counts) == {"v1", "v2"} and within_binomial(counts["v1"], 2000, 0.9), counts


def test_a_reweight_moves_only_the_keys_it_must(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, CANARY)
    keys = [f"session-{i}" for i in range(2000)]
    before = {key: registry.route("draft", key).version for key in keys}
    registry.set_weights("draft", {"v1": 50, "v2": 50})
    after = {key: registry.route("draft", key).version for key in keys}
    assert all(after[key] == "v2" for key in keys if before[key] == "v2")  # v2 only gained
    assert within_binomial(Counter(after.values())["v2"], 2000, 0.5)
    registry.set_weights("draft", {"v1": 50, "v2": 50, "v3": 50})
    third = {key: registry.route("draft", key).version for key in keys}
    assert all(third[key] in (after[key], "v3") for key in keys)  # keys move only onto v3
    registry.set_weights("draft", {"v3": 0})
    assert {key: registry.route("draft", key).version for key in keys} == after


def test_pins_reach_a_version_whatever_its_weight(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, CANARY)
    assert registry.weights("draft")["v3"] == 0
    assert {registry.route("draft@v3", f"k{i}") for i in range(50)} == {VersionRef("draft", "v3")}
    assert registry.route("final@v1") == VersionRef("final", "v1")
    assert str(registry.route("draft@v2")) == "draft@v2"


def test_a_pinned_default_serves_requests_naming_no_model(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, CANARY.replace("default = true", 'default = "v3"'))
    assert registry.default_version == "v3"
    assert {registry.route(None, f"k{i}") for i in range(20)} == {VersionRef("draft", "v3")}
    assert registry.route("draft", "k1").version != "v3"  # naming the model uses the weights


def test_unknown_names_list_what_the_server_has(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, CANARY)
    with pytest.raises(UnknownModel) as caught:
        registry.route("drafts")
    error = caught.value
    assert isinstance(error, InvalidRequest) and error.field == "model"
    assert error.available == ["draft", "final"]
    assert "unknown model 'drafts' (did you mean 'draft'?); this server has 'draft', 'final'" in (
        error.message
    )
    with pytest.raises(UnknownModel, match=r"model 'draft' has no version 'v4'.*'v1', 'v2', 'v3'"):
        registry.route("draft@v4")
    with pytest.raises(UnknownModel, match="no version ''"):
        registry.route("draft@")


# -- live re-weighting ------------------------------------------------------------------------


def test_set_weights_returns_the_new_table_and_keeps_unnamed_versions(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, CANARY)
    assert registry.set_weights("draft", {"v2": 30}) == {"v1": 90.0, "v2": 30.0, "v3": 0.0}
    assert registry.weights("draft") == {"v1": 90.0, "v2": 30.0, "v3": 0.0}


def test_bad_weights_are_all_named_and_change_nothing(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, CANARY)
    with pytest.raises(RegistryError) as caught:
        registry.set_weights("draft", {"v1": -1, "v2": math.nan, "v11": 1, "v3": "x"})  # type: ignore[dict-item]
    problems = caught.value.problems
    assert len(problems) == 4, problems
    assert any("no version 'v11' (did you mean 'v1'?)" in problem for problem in problems)
    with pytest.raises(RegistryError, match="all weights are 0"):
        registry.set_weights("draft", {"v1": 0, "v2": 0})
    with pytest.raises(UnknownModel):
        registry.set_weights("nope", {"v1": 1})
    assert registry.weights("draft") == {"v1": 90.0, "v2": 10.0, "v3": 0.0}


def test_reweighting_from_many_threads_while_routing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers flip the split between all-v1 and all-v2; a reader that saw a half-written
    table would meet v1 and v2 both at 0 (no version to pick: an exception) or both above 0
    with a weight table that is neither of the two. Building a split yields the processor, so
    readers run while a writer is between two steps (a registry that published one version's
    weight at a time fails here)."""
    build = Split.of.__func__  # type: ignore[attr-defined]

    def yielding(cls: type[Split], weights: dict[str, float]) -> Split:
        time.sleep(0.0002)
        return build(cls, weights)

    monkeypatch.setattr(Split, "of", classmethod(yielding))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)  # a woken writer gets the processor back soon: a quick test
    try:
        _reweight_while_routing(tmp_path)
    finally:
        sys.setswitchinterval(interval)


def _reweight_while_routing(tmp_path: Path) -> None:
    registry = registry_of(tmp_path, CANARY)
    tables = ({"v1": 1.0, "v2": 0.0, "v3": 0.0}, {"v1": 0.0, "v2": 1.0, "v3": 0.0})
    registry.set_weights("draft", tables[0])
    errors: list[BaseException] = []
    bad: list[object] = []
    seen: Counter[str] = Counter()
    writes_left = [300]
    lock = threading.Lock()

    def write(table: dict[str, float]) -> None:
        try:
            while True:
                with lock:
                    if writes_left[0] <= 0:
                        return
                    writes_left[0] -= 1
                if registry.set_weights("draft", table) not in tables:
                    bad.append("returned")
        except BaseException as exc:
            errors.append(exc)

    def read(index: int) -> None:
        try:
            i = 0
            while not writes_done.is_set():
                i += 1
                ref = registry.route("draft", f"k{index}-{i}" if i % 2 else None)
                seen[ref.version] += 1
                if ref.version not in ("v1", "v2"):
                    bad.append(ref)
                if registry.weights("draft") not in tables:
                    bad.append("weights")
        except BaseException as exc:
            errors.append(exc)

    writes_done = threading.Event()
    writers = [threading.Thread(target=write, args=(tables[i % 2],)) for i in range(4)]
    readers = [threading.Thread(target=read, args=(i,)) for i in range(4)]
    for thread in writers + readers:
        thread.start()
    for thread in writers:
        thread.join(timeout=300)
    writes_done.set()
    for thread in readers:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in writers + readers)
    assert errors == [] and bad == []
    assert registry.weights("draft") in tables and seen.keys() == {"v1", "v2"}  # both tables


def test_a_shared_backend_reweights_every_registry(tmp_path: Path) -> None:
    """Two registries over one backend behave like two Modal containers over one modal.Dict."""
    backend = InMemoryWeights()
    one = registry_of(tmp_path, CANARY, weights_backend=backend)
    two = registry_of(tmp_path, CANARY, weights_backend=backend)
    one.set_weights("draft", {"v1": 0, "v3": 5})
    assert backend.get("draft") == {"v1": 0.0, "v2": 10.0, "v3": 5.0}
    assert two.refresh() and two.weights("draft") == one.weights("draft")
    assert not two.refresh()  # nothing new
    assert all(two.route("draft", f"k{i}") == one.route("draft", f"k{i}") for i in range(200))
    three = registry_of(tmp_path, CANARY, weights_backend=backend)  # a restart keeps the fleet's
    assert three.weights("draft") == one.weights("draft")


def test_stored_weights_that_break_the_rules_are_never_routed_by(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = InMemoryWeights()
    registry = registry_of(tmp_path, CANARY, weights_backend=backend)
    backend.put("draft", {"v1": 0.0, "v2": 0.0, "v3": 0.0})
    assert not registry.refresh()
    assert registry.weights("draft") == {"v1": 90.0, "v2": 10.0, "v3": 0.0}
    assert "stored weights skipped" in caplog.text and "all weights are 0" in caplog.text
