"""predict.py against the request schema, and against Cog's own prediction server.

The server is the pinned ``cog`` package's real one (``python -m cog.server.http``, the Rust
coglet), run without Docker from a temporary folder that holds links to cog.yaml and predict.py
and the input schema generated from predict.py (scripts/cog_openapi_schema.py), as ``cog build``
would write it. Nothing is written into the repository.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
import types
import typing
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import annotated_types
import httpx
import pydantic
import pytest
import yaml

from inference.lora_spec import LoraAdapter
from inference.models.mock import MockModel
from inference.schema import IMAGE_FIELDS, GenerateRequest
from inference.service import Service
from inference.settings import Settings
from tests.servers import ROOT, free_port

cog_inspector = pytest.importorskip("cog._inspector", reason="the cog extra is not installed")
from cog import _adt as adt  # noqa: E402

SCHEMA_SCRIPT = ROOT / "scripts" / "cog_openapi_schema.py"
#: Schema field -> the input name predict.py declares for it: Replicate's own name, where
#: Replicate's models taught users another one.
COG_NAMES = {"strength": "prompt_strength"}
#: Concurrent requests wait this long for batch company inside the engine.
MAX_WAIT_MS = 250


# -- predict.py inputs == GenerateRequest ----------------------------------------------------


def _inspect(folder: Path, module: str = "predict") -> dict[str, adt.InputField]:
    """The inputs as Cog's own inspector reads them from ``folder/module.py``."""
    sys.path.insert(0, str(folder))
    try:
        sys.modules.pop(module, None)
        with warnings.catch_warnings():  # BasePredictor/predict(): deprecated names, kept
            warnings.simplefilter("ignore", DeprecationWarning)
            return cog_inspector.create_predictor(module, "Predictor").inputs
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(module, None)


def _expected(name: str, field: pydantic.fields.FieldInfo) -> dict[str, Any]:
    """What Cog should declare for one GenerateRequest field (an image field is a file)."""
    if name in IMAGE_FIELDS:
        return {
            "type": adt.PrimitiveType.PATH,
            "optional": True,
            "default": None,
            "choices": None,
            "ge": None,
            "le": None,
            "max_length": None,
        }
    annotation, optional = field.annotation, False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation, optional = args[0], len(args) < len(typing.get_args(annotation))
    choices = None
    if typing.get_origin(annotation) is typing.Literal:
        choices = list(typing.get_args(annotation))
        annotation = type(choices[0])
    bounds: dict[str, Any] = {"ge": None, "le": None, "max_length": None}
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            bounds["ge"] = float(item.ge)
        elif isinstance(item, annotated_types.Le):
            bounds["le"] = float(item.le)
        elif isinstance(item, annotated_types.MaxLen):
            bounds["max_length"] = item.max_length
    return {
        "type": adt.PrimitiveType.from_type(annotation),
        "optional": optional,
        "default": field.default,
        "choices": choices,
        **bounds,
    }


def _declared(field: adt.InputField) -> dict[str, Any]:
    """What predict.py declares for one input, in the same shape."""
    return {
        "type": field.type.primitive,
        "optional": field.type.repetition is adt.Repetition.OPTIONAL,
        "default": field.default,
        "choices": field.choices,
        "ge": field.ge,
        "le": field.le,
        "max_length": field.max_length,
    }


def cog_fields(model: type[pydantic.BaseModel]) -> dict[str, pydantic.fields.FieldInfo]:
    """The request model's fields as Cog spells them: Replicate's names where its models taught
    users another one (``COG_NAMES``), and ``loras`` (a list of adapters, which Cog cannot
    declare) as Replicate's ``lora_weights`` (their references, as text) and ``lora_scale`` (the
    adapter's own scale field, bounds and default included)."""
    spelled: dict[str, pydantic.fields.FieldInfo] = {}
    for name, field in model.model_fields.items():
        if name != "loras":
            spelled[COG_NAMES.get(name, name)] = field
            continue
        spelled["lora_weights"] = pydantic.fields.FieldInfo.from_annotated_attribute(
            str | None, None
        )
        spelled["lora_scale"] = LoraAdapter.model_fields["scale"]
    return spelled


def schema_differences(
    inputs: dict[str, adt.InputField], model: type[pydantic.BaseModel]
) -> list[str]:
    """Every way the Cog inputs differ from the request model; empty when they agree."""
    fields = cog_fields(model)
    names = list(fields)
    if list(inputs) != names:
        return [f"inputs {list(inputs)} != fields {names}"]
    differences = []
    for name in names:
        expected, declared = _expected(name, fields[name]), _declared(inputs[name])
        differences += [
            f"{name}.{key}: predict.py {declared[key]!r} != schema {expected[key]!r}"
            for key in expected
            if declared[key] != expected[key]
        ]
        if not inputs[name].description:
            differences.append(f"{name}: predict.py gives no description")
    return differences


def test_predict_inputs_equal_the_request_schema_field_by_field() -> None:
    assert schema_differences(_inspect(ROOT), GenerateRequest) == []


def test_file_inputs_offer_an_image_picker_and_nothing_else_does() -> None:
    """``accept="image/*"`` (cog 0.23) makes Replicate's form offer image files; Cog's
    inspector does not carry it, so it is read from the declarations themselves."""
    import predict

    parameters = inspect.signature(predict.Predictor.predict).parameters
    accepts = {name: p.default.accept for name, p in parameters.items() if name != "self"}
    assert {name: a for name, a in accepts.items() if a} == {"image": "image/*", "mask": "image/*"}


def test_a_change_on_either_side_is_caught(tmp_path: Path) -> None:
    """The comparison is not vacuous: a bound changed on one side alone is reported."""
    source = (ROOT / "predict.py").read_text()
    assert source.count("le=30.0") == 1
    (tmp_path / "predict_changed.py").write_text(source.replace("le=30.0", "le=20.0"))
    changed_predictor = _inspect(tmp_path, "predict_changed")
    assert schema_differences(changed_predictor, GenerateRequest) == [
        "prompt_weight.le: predict.py 20.0 != schema 30.0"
    ]

    changed_schema = pydantic.create_model(
        "Changed",
        __base__=GenerateRequest,
        num_outputs=(int, pydantic.Field(1, ge=1, le=8)),
        output_format=(typing.Literal["png", "webp"], "png"),
    )
    assert schema_differences(_inspect(ROOT), changed_schema) == [
        "num_outputs.le: predict.py 4.0 != schema 8.0",
        "output_format.choices: predict.py ['png', 'jpeg', 'webp'] != schema ['png', 'webp']",
    ]


def test_predict_writes_out_i_files_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """setup() then predict() as Cog calls them: files named out-{i}.{ext}; old ones pruned."""
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    import predict

    inputs = _inspect(ROOT)
    kwargs = {name: field.default for name, field in inputs.items()}
    kwargs.update(seed=7, prompt_weight=0.7, num_outputs=2, output_format="webp")
    predictor = predict.Predictor()
    predictor.setup()
    try:
        paths = asyncio.run(predictor.predict(**kwargs))
        assert [p.name for p in paths] == ["out-0.webp", "out-1.webp"]
        assert all(p.read_bytes()[8:12] == b"WEBP" for p in paths)
        assert paths[0].parent.parent == predictor.outputs
        expired = time.time() - predict.OUTPUT_TTL_S - 1
        os.utime(paths[0].parent, (expired, expired))
        newer = asyncio.run(predictor.predict(**kwargs))
        assert not paths[0].parent.exists() and newer[0].exists()
        with pytest.raises(ValueError, match=r"height must be a multiple of 8, got 100"):
            asyncio.run(predictor.predict(**{**kwargs, "height": 100}))
    finally:
        predictor.service.stop()


# -- the real Cog prediction server ------------------------------------------------------------


def _image_env() -> dict[str, str]:
    """cog.yaml's ``environment``, which `cog build` bakes into the image as ENV lines."""
    config = yaml.safe_load((ROOT / "cog.yaml").read_text())
    return dict(item.split("=", 1) for item in config.get("environment") or [])


def _server_env(port: int, folder: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env.pop("COG_WEIGHTS", None)
    env.update(_image_env())
    env.update(
        # coglet starts its worker with a bare `python`: the venv's must come first
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        TMPDIR=str(folder),  # prediction outputs stay in the test's temp folder
        COG_PREDICT_TYPE_STUB="predict.py:Predictor",
        PORT=str(port),
        **extra,
    )
    return env


def _cog_folder(folder: Path) -> Path:
    """cog.yaml and predict.py linked into ``folder``, with .cog/openapi_schema.json generated."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("cog.yaml", "predict.py"):
        (folder / name).symlink_to(ROOT / name)
    subprocess.run(
        [sys.executable, str(SCHEMA_SCRIPT), "--root", str(folder)],
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
    )
    return folder


class CogServer:
    """A running ``python -m cog.server.http``; its output goes to ``log``."""

    def __init__(self, folder: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / f"server-{self.port}.log"
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"],
                cwd=folder,
                env=_server_env(self.port, folder, **env),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_for(self, statuses: tuple[str, ...], timeout_s: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"cog server exited:\n{self.log.read_text()}")
            try:
                health = httpx.get(f"{self.url}/health-check", timeout=5).json()
                if health.get("status") in statuses:
                    return health
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"no {statuses} within {timeout_s}s:\n{self.log.read_text()}")

    def runtime_threads(self) -> list[str]:
        """Names of the server's tokio threads (Linux: /proc). Blocking-pool threads would share
        the name; coglet 0.23.1 starts none in this process, so the count is its runtime's."""
        tasks = Path(f"/proc/{self.process.pid}/task")
        if not tasks.is_dir():
            pytest.skip("needs Linux /proc")
        names = [(task / "comm").read_text().strip() for task in tasks.iterdir()]
        return [name for name in names if name.startswith("tokio-")]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def cog_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _cog_folder(tmp_path_factory.mktemp("cog"))


@pytest.fixture(scope="module")
def cog_server(cog_folder: Path) -> Iterator[CogServer]:
    """One Cog server for the module: concurrency as `cog build` bakes it, batching on."""
    server = CogServer(cog_folder, COG_MAX_CONCURRENCY="8", MAX_WAIT_MS=str(MAX_WAIT_MS))
    try:
        server.wait_for(("READY",))
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cog_url(cog_server: CogServer) -> str:
    return cog_server.url


@pytest.fixture(scope="module")
def direct_service() -> Iterator[Service]:
    service = Service(MockModel(), Settings(max_wait_ms=0)).start()
    yield service
    service.stop()


def _image(output: list[str], index: int = 0) -> bytes:
    header, _, payload = output[index].partition(",")
    assert header == "data:image/png;base64", header
    return base64.b64decode(payload)


def _predict(url: str, payload: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/predictions", json={"input": payload}, timeout=120)


def test_schema_file_is_what_the_server_validates_with(cog_folder: Path, cog_url: str) -> None:
    generated = json.loads((cog_folder / ".cog" / "openapi_schema.json").read_text())
    served = httpx.get(f"{cog_url}/openapi.json", timeout=10)
    assert served.status_code == 200
    assert (
        served.json()["components"]["schemas"]["Input"]
        == generated["components"]["schemas"]["Input"]
    )
    assert list(generated["components"]["schemas"]["Input"]["properties"]) == list(
        cog_fields(GenerateRequest)
    )


def test_prediction_is_byte_identical_to_the_engine(cog_url: str, direct_service: Service) -> None:
    response = _predict(cog_url, {"seed": 42, "prompt_weight": 0.7})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "succeeded", body
    assert len(body["output"]) == 1
    expected = direct_service.generate(GenerateRequest(seed=42, prompt_weight=0.7))
    assert _image(body["output"]) == expected.images[0].data
    assert body["metrics"]["seed"] == 42
    assert body["metrics"]["model"] == "mock"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seed", "forty-two"),
        ("prompt_weight", 31),
        ("prompt_weight", -0.5),
        ("output_format", "gif"),
        ("lora_scale", 5),
        ("lora_scale", -1),
    ],
)
def test_invalid_input_gets_422_naming_the_field(cog_url: str, field: str, value: Any) -> None:
    response = _predict(cog_url, {field: value})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert [d["loc"] for d in detail] == [["body", "input", field]], detail
    assert str(value) in detail[0]["msg"] or repr(value) in detail[0]["msg"], detail


def test_schema_rule_cog_cannot_express_fails_with_a_clear_error(cog_url: str) -> None:
    response = _predict(cog_url, {"seed": 1, "width": 100})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "failed"
    assert "width must be a multiple of 8, got 100 (try 96 or 104)" in body["error"]


def test_concurrent_predictions_share_model_calls(cog_url: str, direct_service: Service) -> None:
    seeds = list(range(100, 106))
    with ThreadPoolExecutor(len(seeds)) as pool:
        responses = list(pool.map(lambda s: _predict(cog_url, {"seed": s}), seeds))
    bodies = [r.json() for r in responses]
    failed = [(b.get("status"), b.get("error"), b.get("logs")) for b in bodies]
    assert [b.get("status") for b in bodies] == ["succeeded"] * len(seeds), [
        f for f in failed if f[0] != "succeeded"
    ]
    batch_sizes = [b["metrics"]["batch_size"] for b in bodies]
    assert max(batch_sizes) > 1, f"no prediction shared a model call: {batch_sizes}"
    for seed, body in zip(seeds, bodies, strict=True):  # batching never changes the bytes
        assert (
            _image(body["output"])
            == direct_service.generate(GenerateRequest(seed=seed)).images[0].data
        )


def test_an_image_file_input_gives_the_http_servers_bytes(
    cog_url: str, direct_service: Service, server_url: str
) -> None:
    """Cog hands predict() a cog.Path for a data: URI (or URL) input; the image and mask
    bytes give the output the JSON API gives for the same bytes."""
    from tests.test_img2img import half_mask, photo, png

    image, mask = png(photo()), png(half_mask())
    uri = "data:image/png;base64," + base64.b64encode(image).decode()
    mask_uri = "data:image/png;base64," + base64.b64encode(mask).decode()
    fields = {"prompt": "a red fox", "seed": 7, "steps": 6}
    response = _predict(cog_url, {**fields, "image": uri, "mask": mask_uri, "prompt_strength": 0.7})
    body = response.json()
    assert body["status"] == "succeeded", body
    http_body = {**fields, "image": uri, "mask": mask_uri, "strength": 0.7}
    over_http = httpx.post(f"{server_url}/predict", json=http_body, timeout=60).json()
    expected = base64.b64decode(over_http["images"][0]["data"])
    assert _image(body["output"]) == expected
    direct = direct_service.generate({**http_body, "image": image, "mask": mask})
    assert direct.images[0].data == expected


def test_bad_image_inputs_fail_naming_the_field(cog_url: str) -> None:
    text = "data:text/plain;base64," + base64.b64encode(b"a red fox").decode()
    failed = _predict(cog_url, {"image": text}).json()
    assert failed["status"] == "failed"
    assert "image is not an image this server reads: text ('a red fox')" in failed["error"]
    from tests.test_img2img import half_mask, png

    mask = "data:image/png;base64," + base64.b64encode(png(half_mask())).decode()
    alone = _predict(cog_url, {"mask": mask}).json()
    assert alone["status"] == "failed" and "mask needs an image" in alone["error"]
    out_of_range = _predict(cog_url, {"prompt_strength": 1.5})
    assert out_of_range.status_code == 422
    assert [d["loc"] for d in out_of_range.json()["detail"]] == [
        ["body", "input", "prompt_strength"]
    ]


# coglet 0.23.1 admits a prediction with PermitPool::try_acquire (crates/coglet/src/permit/pool.rs),
# which only try-locks the slot pool: a request that finds another request's admission holding the
# lock is refused with 409 "At capacity - all prediction slots busy" although slots are free. One
# of six concurrent predictions failed that way in CI. cog.yaml's environment (baked into the
# image) sets TOKIO_WORKER_THREADS=1, so coglet's HTTP runtime admits one request at a time.


def test_cog_server_admits_on_one_runtime_thread(cog_server: CogServer) -> None:
    """The race's condition, checked deterministically: before cog.yaml set TOKIO_WORKER_THREADS,
    coglet ran one runtime thread per CPU, and two could admit at the same instant."""
    assert cog_server.runtime_threads() == ["tokio-rt-worker"]
    assert _image_env().get("TOKIO_WORKER_THREADS") == "1"


def test_setup_failure_names_the_weights_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "weights.json"
    server = CogServer(_cog_folder(tmp_path / "cog"), COG_WEIGHTS=str(missing))
    try:
        health = server.wait_for(("SETUP_FAILED", "READY"))
    finally:
        server.stop()
    assert health["status"] == "SETUP_FAILED", health
    assert health["setup"]["status"] == "failed"
    assert str(missing) in health["setup"]["logs"], health["setup"]["logs"]
    assert "does not exist" in health["setup"]["logs"]


def test_concurrent_predictions_prune_old_outputs_without_racing(tmp_path: Path) -> None:
    """Several predictions finishing together each prune expired folders; none may fail
    because another one deleted a folder first."""
    import predict

    predictor = predict.Predictor()
    predictor.outputs = tmp_path
    old = time.time() - predict.OUTPUT_TTL_S - 60
    for i in range(300):
        folder = tmp_path / f"prediction-old-{i}"
        folder.mkdir()
        (folder / "out-0.png").write_bytes(b"x")
        os.utime(folder, (old, old))
    with ThreadPoolExecutor(8) as pool:
        written = list(pool.map(lambda _: predictor._write([b"png"], "png"), range(32)))
    assert all(paths[0].read_bytes() == b"png" for paths in written)
    assert not any(p.name.startswith("prediction-old-") for p in tmp_path.iterdir())
