"""Modal with a registry, up to Modal's boundary: a pool of containers per version, the lines of
a ``.map()`` batch routed to their pools, per-version pool options, and traffic weights shared
through a Dict.

Modal has no local emulator (tests/test_modal.py), so the class is replaced by a fake that
records the options and parameters each pool was built with and answers ``generate.map`` as a
pool of that version would; the Dict is a dict with ``modal.Dict``'s blocking get and put.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from inference.registry import Registry, RegistryError, UnknownModel, VersionRef
from inference.registry.shared import DictWeights, WeightsRefresher
from inference.settings import Settings
from tests.test_modal import _no_modal_credentials  # noqa: F401 (autouse: offline, no token)

pytestmark = pytest.mark.filterwarnings("ignore:The .* function is executing locally:UserWarning")

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = """
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
    [models.versions.modal]
    gpu = "H100"
    max_containers = 2
    min_containers = 1
    scaledown_window_s = 60

[[models]]
name = "final"

  [[models.versions]]
  name = "v1"
  backend = "mock"
"""


@pytest.fixture(scope="module")
def deploy() -> Any:
    import deploy as module

    return module


def registry_file(tmp_path: Path, text: str = REGISTRY) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def registry(tmp_path: Path, text: str = REGISTRY, **kwargs: Any) -> Registry:
    return Registry.from_settings(Settings(models_file=registry_file(tmp_path, text)), **kwargs)


class FakeStore(dict):  # type: ignore[type-arg]
    """``modal.Dict``'s blocking get and put, shared by the "containers" of a test."""

    def put(self, key: str, value: Any) -> None:
        self[key] = value


class FakeMethod:
    def __init__(self, pool: FakePool) -> None:
        self.pool = pool

    def map(self, requests: list[dict[str, Any]], return_exceptions: bool = False) -> Any:
        assert return_exceptions
        self.pool.received.extend(requests)
        return [{"served_by": self.pool.version, "prompt": r["prompt"]} for r in requests]


class FakePool:
    def __init__(self, cls: FakeCls, version: str) -> None:
        self.cls, self.version = cls, version
        self.received: list[dict[str, Any]] = []
        self.generate = FakeMethod(self)
        self.autoscaler: dict[str, int] = {}
        cls.pools.append(self)

    def update_autoscaler(self, **sizes: int) -> None:
        self.autoscaler = sizes


class FakeCls:
    """``deploy.Model``: ``with_options`` stacks options, a call is a pool of that version."""

    def __init__(self, options: dict[str, Any] | None = None, pools: list[FakePool] | None = None):
        self.options = options or {}
        self.pools = pools if pools is not None else []

    def with_options(self, **options: Any) -> FakeCls:
        return FakeCls({**self.options, **options}, self.pools)

    def __call__(self, version: str = "") -> FakePool:
        pool = FakePool(self, version)
        return pool


@pytest.fixture
def fake_model(deploy: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeCls:
    fake = FakeCls()
    monkeypatch.setattr(deploy, "Model", fake)
    monkeypatch.setattr(deploy, "POOLS", deploy.pool_settings(registry(tmp_path)))
    return fake


def by_version(fake: FakeCls) -> dict[str, list[dict[str, Any]]]:
    received: dict[str, list[dict[str, Any]]] = {}
    for pool in fake.pools:
        received.setdefault(pool.version, []).extend(pool.received)
    return received


# -- the registry's pool table ------------------------------------------------------------------


def test_a_versions_modal_table_is_read_and_left_out_keys_stay_unset(tmp_path: Path) -> None:
    reg = registry(tmp_path)
    v2 = reg.version(VersionRef("draft", "v2")).pool
    assert v2.overrides() == {
        "gpu": "H100",
        "max_containers": 2,
        "min_containers": 1,
        "scaledown_window_s": 60,
    }
    assert reg.version(VersionRef("draft", "v1")).pool.overrides() == {}


def test_each_bad_pool_value_is_one_problem_naming_it(tmp_path: Path) -> None:
    bad = REGISTRY.replace('gpu = "H100"', 'gpu = "H100,,A100"\n    gpus = 1').replace(
        "max_containers = 2", "max_containers = 0"
    )
    bad = bad.replace("scaledown_window_s = 60", 'scaledown_window_s = "60"')
    with pytest.raises(RegistryError) as caught:
        registry(tmp_path, bad)
    problems = caught.value.problems
    assert len(problems) == 4, problems
    assert all(p.startswith("model 'draft' version 'v2': modal.") for p in problems), problems
    text = "\n".join(problems)
    for named in ("modal.gpu = 'H100,,A100'", "modal.gpus = 1: unknown key", "max_containers = 0"):
        assert named in text
    assert "modal.scaledown_window_s = '60'" in text  # strict: a string is not a number
    crossed = REGISTRY.replace("max_containers = 2", "max_containers = 2\n    min_containers = 3")
    crossed = crossed.replace("    min_containers = 1\n", "")
    with pytest.raises(RegistryError, match="min_containers = 3 exceeds max_containers = 2"):
        registry(tmp_path, crossed)
    with pytest.raises(RegistryError, match=r"modal must be a table"):
        registry(
            tmp_path,
            REGISTRY.replace(
                'backend = "mock"\n  weight = 90', 'backend = "mock"\n  weight = 90\n  modal = 3'
            ),
        )


# -- pools: per-version options reach the class --------------------------------------------------


def test_each_version_gets_its_own_pool_with_its_options(deploy: Any, fake_model: FakeCls) -> None:
    settings = deploy.SETTINGS
    canary = deploy.pool(VersionRef("draft", "v2"))
    assert canary.version == "draft@v2"
    assert canary.cls.options == {
        "gpu": "H100",
        "env": {"DTYPE": "bfloat16"},
        "scaledown_window": 60,
        "max_containers": 2,
        "buffer_containers": settings.buffer_containers,
    }
    main = deploy.pool(VersionRef("draft", "v1"), retried=True)
    assert main.version == "draft@v1"
    assert main.cls.options["gpu"] == settings.gpu_request  # the deployment's MODAL_GPU
    assert main.cls.options["max_containers"] == settings.max_containers
    assert main.cls.options["retries"].max_retries == settings.batch_retries
    # Without a registry: the one pool, no parameter, no options (today's topology).
    assert deploy.batch_model().version == "" and "gpu" not in fake_model.pools[-1].cls.options


def test_min_containers_go_through_update_autoscaler_on_the_deployed_class(
    deploy: Any, fake_model: FakeCls, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked_up = []

    def from_name(app: str, name: str) -> FakeCls:
        looked_up.append((app, name))
        return fake_model

    monkeypatch.setattr(deploy.modal.Cls, "from_name", from_name)
    applied = deploy.scale_pools()
    assert looked_up == [(deploy.SETTINGS.app_name, "Model")]
    assert applied["draft@v2"] == {"min_containers": 1, "buffer_containers": 0}
    assert {p.version: p.autoscaler["min_containers"] for p in fake_model.pools} == {
        "draft@v1": deploy.SETTINGS.min_containers,
        "draft@v2": 1,
        "final@v1": deploy.SETTINGS.min_containers,
    }


def test_a_pool_gpu_the_image_has_no_kernels_for_fails_the_deploy(
    deploy: Any, tmp_path: Path
) -> None:
    reg = registry(tmp_path, REGISTRY.replace('gpu = "H100"', 'gpu = "B200"'))
    with pytest.raises(SystemExit) as caught:
        deploy.pool_settings(reg)
    message = str(caught.value)
    assert "version draft@v2" in message and "B200 is a Blackwell GPU" in message


# -- .map(): each line on its model's pool -------------------------------------------------------


def test_map_lines_land_on_their_versions_pool_by_weight_pin_and_model(
    deploy: Any, fake_model: FakeCls, tmp_path: Path
) -> None:
    reg = registry(tmp_path, rng=random.Random(7))
    lines = [{"prompt": f"p{i}", "model": "draft"} for i in range(2000)]
    lines += [{"prompt": "pinned", "model": "draft@v2"}] * 5
    lines += [{"prompt": "final", "model": "final"}, {"prompt": "default"}]
    outcomes = dict(deploy.map_on_pools(reg, lines))
    assert sorted(outcomes) == list(range(len(lines)))  # every line answered, by its position
    received = by_version(fake_model)
    split = Counter(o["served_by"] for i, o in outcomes.items() if i < 2000)
    # 90/10 over 2,000 lines: v2's count is binomial(2000, 0.1), sd ~13.4; 5 sd either side.
    assert 200 - 67 <= split["draft@v2"] <= 200 + 67, split
    assert split["draft@v1"] + split["draft@v2"] == 2000
    assert [outcomes[i]["served_by"] for i in range(2000, 2005)] == ["draft@v2"] * 5
    assert outcomes[2005]["served_by"] == "final@v1"
    assert outcomes[2006]["served_by"] in ("draft@v1", "draft@v2")  # the default model
    # the manifest's ``version``: the pool that drew each line, as a local fleet's batch says
    assert all(o["version"] == o["served_by"] for o in outcomes.values())
    assert all("model" not in r for rs in received.values() for r in rs)  # pools serve their own
    assert len({p.version for p in fake_model.pools}) == len(fake_model.pools)  # one map a pool


def test_an_unknown_model_fails_its_line_before_any_gpu_call(
    deploy: Any, fake_model: FakeCls, tmp_path: Path
) -> None:
    reg = registry(tmp_path)
    lines = [{"prompt": "a", "model": "drafty"}, {"prompt": "b", "model": "final@v9"}]
    outcomes = dict(deploy.map_on_pools(reg, lines))
    assert isinstance(outcomes[0], UnknownModel) and "did you mean 'draft'" in str(outcomes[0])
    assert isinstance(outcomes[1], UnknownModel) and "no version 'v9'" in str(outcomes[1])
    assert fake_model.pools == []  # no pool was even built
    outcomes = dict(deploy.map_on_pools(reg, [{"prompt": "c", "model": "final"}, lines[0]]))
    assert outcomes[0]["served_by"] == "final@v1" and isinstance(outcomes[1], UnknownModel)
    assert by_version(fake_model) == {"final@v1": [{"prompt": "c"}]}


def test_without_a_registry_the_batch_maps_over_the_one_class(
    deploy: Any, fake_model: FakeCls, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deploy, "REGISTRY", None)
    outcomes = list(deploy.map_on_modal([{"prompt": "a"}, {"prompt": "b"}]))
    assert outcomes == [
        (0, {"served_by": "", "prompt": "a"}),
        (1, {"served_by": "", "prompt": "b"}),
    ]


# -- weights shared through a Dict ---------------------------------------------------------------


def test_a_reweight_on_one_container_is_routed_by_another(tmp_path: Path) -> None:
    store = FakeStore()
    first = registry(tmp_path, weights_backend=DictWeights(store))
    second = registry(tmp_path, weights_backend=DictWeights(store))
    key = next(
        k for k in (f"user-{i}" for i in range(1000)) if first.route("draft", k).version == "v1"
    )
    assert second.route("draft", key) == first.route("draft", key)  # sticky across containers
    refresher = WeightsRefresher(second, interval_s=0.05).start()
    try:
        first.set_weights("draft", {"v1": 0, "v2": 1})
        assert store["draft"] == {"v1": 0.0, "v2": 1.0}
        deadline = time.monotonic() + 30
        while second.weights("draft") != {"v1": 0.0, "v2": 1.0}:
            assert time.monotonic() < deadline, "the second container never saw the re-weight"
            time.sleep(0.02)
    finally:
        refresher.stop()
    assert {second.route("draft").version for _ in range(50)} == {"v2"}
    assert second.route("draft", key).version == "v2"  # its sticky key moved with the weight
    assert second.route("draft@v1").version == "v1"  # a pin still reaches a drained version
    third = registry(tmp_path, weights_backend=DictWeights(store))  # a container started later
    assert third.weights("draft") == {"v1": 0.0, "v2": 1.0}


def test_a_store_that_fails_keeps_the_last_weights(tmp_path: Path) -> None:
    class Down(FakeStore):
        def get(self, key: str, default: Any = None) -> Any:
            raise ConnectionError("Dict unreachable")

    store = Down()
    reg = registry(tmp_path, weights_backend=DictWeights(FakeStore()))
    reg._backend = DictWeights(store)  # the store goes down after start
    refresher = WeightsRefresher(reg, interval_s=0.01).start()
    time.sleep(0.1)
    refresher.stop()
    assert reg.weights("draft") == {"v1": 90.0, "v2": 10.0}


def test_a_pool_container_serves_its_version_and_shares_the_weights(
    deploy: Any, tmp_path: Path
) -> None:
    from tests.conftest import make_service

    settings = Settings(models_file=registry_file(tmp_path))
    assert deploy.served_settings(settings, "final@v1").model == "mock"
    with pytest.raises(KeyError):
        deploy.served_settings(settings, "final@v9")
    store = FakeStore()
    service = make_service()
    try:
        fleet = deploy.served_fleet(settings, "draft@v2", service, store)
        assert fleet.default_ref == VersionRef("draft", "v2") and fleet.default is service
        assert fleet.registry.route(None) == VersionRef("draft", "v2")  # its own, unnamed
        fleet.registry.set_weights("final", {"v1": 3})
        assert store["final"] == {"v1": 3.0}
        other = deploy.served_fleet(settings, "", service, store)  # the HTTP pool: the default
        assert other.default_ref.model == "draft" and other.registry.weights("final") == {"v1": 3.0}
    finally:
        service.stop()
