"""The Modal adapter, offline: no token, no network, nothing that contacts Modal.

Modal has no local emulator, so these tests use what works offline (see RUNTIMES.md):
``import deploy``, ``.info()`` for declared resources, and ``.local()`` to run the class's code
in-process, including the ASGI app served through a test client.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from packaging.version import Version

from inference.errors import InvalidRequest
from inference.schema import GenerateRequest
from inference.settings import Settings
from tests.conftest import make_service
from tools.checks.cog import TORCH_BY_CUDA
from tools.checks.modal import check

# .local() runs without the weights volume, as intended here.
pytestmark = pytest.mark.filterwarnings("ignore:The .* function is executing locally:UserWarning")

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SMALL = {"prompt": "a red fox", "seed": 7, "steps": 4, "width": 64, "height": 64}

# Refuses every non-loopback connection; used in this process and in each subprocess.
BLOCK_NETWORK = textwrap.dedent(
    """
    import socket
    _connect = socket.socket.connect
    def _loopback_only(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost") \\
                and self.family != socket.AF_UNIX:
            raise OSError(f"network blocked in tests: {address}")
        return _connect(self, address)
    socket.socket.connect = _loopback_only
    """
)


@pytest.fixture(autouse=True)
def _no_modal_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Modal credentials and no route out: any attempt to reach Modal fails loudly."""
    for name in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "no-modal.toml"))


@pytest.fixture(scope="module")
def deploy() -> Any:
    import deploy as module

    return module


def run_deploy(
    code: str,
    env: dict[str, str] | None = None,
    tmp: Path | None = None,
    root: Path = ROOT,
    prelude: str = "",
) -> Any:
    """Run ``code`` after ``import deploy`` (from ``root``) in a fresh, offline interpreter."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MODAL_") and k.upper() not in {"MODEL", "AUTH_TOKEN"}
    }
    clean["MODAL_CONFIG_PATH"] = str((tmp or ROOT) / "no-modal.toml")
    if root != ROOT:  # a changed copy of deploy.py, over this checkout's package
        clean["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), clean.get("PYTHONPATH")]))
    script = BLOCK_NETWORK + prelude + "import json, deploy\n" + textwrap.dedent(code)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=root,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc


def _stop(obj: Any) -> None:
    """Modal never runs @modal.exit locally; reach the instance's engine through its app."""
    obj.web.local().state.service.stop()


@pytest.fixture(scope="module")
def model(deploy: Any) -> Iterator[Any]:
    """One class instance (one engine, as in one container) for the module's tests."""
    with pytest.MonkeyPatch.context() as env:
        for name in Settings.model_fields:
            env.delenv(name.upper(), raising=False)
        obj = deploy.Model()
        obj.generate.local(dict(SMALL))  # runs the @modal.enter hooks under clean settings
    yield obj
    _stop(obj)


# -- importing and declared resources ---------------------------------------------------------


def test_import_deploy_is_offline_fast_and_uses_nothing_deprecated(tmp_path: Path) -> None:
    proc = run_deploy(
        """
        import sys
        print(json.dumps({"heavy": sorted(m for m in ("torch", "fastapi", "diffusers")
                                          if m in sys.modules)}))
        """,
        tmp=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"heavy": []}
    # The same import with Modal's deprecation warnings turned into errors.
    strict = subprocess.run(
        [
            sys.executable,
            "-c",
            BLOCK_NETWORK + "import warnings, modal.exception\n"
            "warnings.simplefilter('error', modal.exception.DeprecationError)\n"
            "warnings.simplefilter('error', DeprecationWarning)\n"
            "import deploy\n"
            "deploy.Model().generate.info(); deploy.Model().web.info()\n"
            "deploy.download_weights.info()\n",
        ],
        cwd=ROOT,
        env={**os.environ, "MODAL_CONFIG_PATH": str(tmp_path / "none.toml")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert strict.returncode == 0, strict.stderr


def test_the_class_asks_for_a_gpu_mounts_the_volume_and_has_generate(deploy: Any) -> None:
    settings = deploy.SETTINGS
    info = deploy.Model().generate.info()
    assert info.gpus == [(settings.gpu.upper(), 1)]
    assert {path: v.name for path, v in info.volumes.items()} == {
        deploy.WEIGHTS_DIR: settings.volume
    }
    assert {"generate", "web"} <= set(info.method_names or [])
    assert info.timeout == settings.timeout_s
    assert info.startup_timeout == settings.startup_timeout_s
    assert info.concurrency_info is not None
    assert info.concurrency_info.max_inputs == settings.max_inputs
    assert info.concurrency_info.target_inputs == settings.target_inputs
    assert info.batching_info is None  # one batching layer: the engine's
    web = deploy.Model().web.info().method_details["web"]
    assert web.unauthenticated is (not settings.proxy_auth)
    download = deploy.download_weights.info()
    assert download.gpus == []  # downloading needs no GPU
    assert {v.name for v in download.volumes.values()} == {settings.volume}


def test_the_image_takes_torch_from_an_index_that_publishes_it(deploy: Any) -> None:
    """pip falls back to PyPI's CUDA 13 torch, silently, when the extra index has none."""
    wheel = re.search(r"/whl/cu(\d+)(\d)$", deploy.SETTINGS.torch_index)
    assert wheel, deploy.SETTINGS.torch_index
    first, last = TORCH_BY_CUDA[".".join(wheel.groups())]  # KeyError: no known torch there
    project = (ROOT / "pyproject.toml").read_text()
    low, high = re.search(r'"torch>=([\d.]+),<([\d.]+)"', project).groups()  # type: ignore[union-attr]
    # The image's torch (the lock leaves torch out) has a wheel there and is in the range.
    version = Version(deploy.TORCH.removeprefix("torch=="))
    assert Version(first) <= version <= Version(last), (first, last, version)
    assert Version(low) <= version < Version(high)
    # The Makefile's and the Dockerfile's torch: the one requirements.lock was resolved for.
    assert f"TORCH ?= {deploy.TORCH}\n" in (ROOT / "Makefile").read_text()
    assert f"ARG TORCH_VERSION={version}\n" in (ROOT / "Dockerfile").read_text()
    assert deploy.LOCK == ROOT / "requirements.lock" and deploy.LOCK.is_file()


def test_settings_data_agree_with_what_deploy_declares(tmp_path: Path) -> None:
    """Every resource follows its MODAL_* variable, including the web endpoint's auth flag."""
    env = {
        "MODAL_GPU": "a100-80gb",
        "MODAL_TIMEOUT_S": "900",
        "MODAL_STARTUP_TIMEOUT_S": "1800",
        "MODAL_VOLUME": "my-weights",
        "MODAL_PROXY_AUTH": "true",
        "MODAL_MAX_INPUTS": "8",
        "MODAL_TARGET_INPUTS": "4",
    }
    proc = run_deploy(
        """
        info = deploy.Model().generate.info()
        web = deploy.Model().web.info().method_details["web"]
        print(json.dumps({
            "gpus": info.gpus, "timeout": info.timeout, "startup": info.startup_timeout,
            "volumes": {p: v.name for p, v in info.volumes.items()},
            "max_inputs": info.concurrency_info.max_inputs,
            "target_inputs": info.concurrency_info.target_inputs,
            "unauthenticated": web.unauthenticated,
            "forwarded": sorted(deploy.CONTAINER_ENV),
        }))
        """,
        env=env,
        tmp=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    declared = json.loads(proc.stdout)
    assert declared["gpus"] == [["A100-80GB", 1]]
    assert (declared["timeout"], declared["startup"]) == (900, 1800)
    assert declared["volumes"] == {"/weights": "my-weights"}
    assert (declared["max_inputs"], declared["target_inputs"]) == (8, 4)
    assert declared["unauthenticated"] is False
    # The container re-imports deploy.py: the same settings must reach it.
    assert set(env) <= set(declared["forwarded"])


@pytest.mark.parametrize(
    ("gpu", "gpus", "cuda", "dtype"),
    [
        ("H100, A100-80GB", [["H100", 1], ["A100-80GB", 1]], "cu126", "bfloat16"),
        ("b200,h100", [["B200", 1], ["H100", 1]], "cu130", "bfloat16"),  # one image for both
        ("RTX-PRO-6000", [["RTX-PRO-6000", 1]], "cu130", "bfloat16"),
        ("L4, T4", [["L4", 1], ["T4", 1]], "cu126", "float16"),  # what every GPU listed runs
    ],
)
def test_a_gpu_fallback_list_gets_one_torch_build_that_runs_on_each(
    gpu: str, gpus: list[Any], cuda: str, dtype: str, tmp_path: Path
) -> None:
    proc = run_deploy(
        """
        print(json.dumps({"gpus": deploy.Model().generate.info().gpus,
                          "index": deploy.SETTINGS.torch_index, "dtype": deploy.GPU_DTYPE}))
        """,
        env={"MODAL_GPU": gpu},
        tmp=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    declared = json.loads(proc.stdout)
    assert declared["gpus"] == gpus
    assert declared["index"] == f"https://download.pytorch.org/whl/{cuda}"
    assert declared["dtype"] == dtype
    wheel = re.search(r"cu(\d+)(\d)$", cuda)
    first, last = TORCH_BY_CUDA[".".join(wheel.groups())]  # type: ignore[union-attr]
    assert Version(first) <= Version("2.13.0") <= Version(last)  # the image's torch is there


def test_a_multi_gpu_container_serves_on_every_gpu(tmp_path: Path) -> None:
    code = "print(json.dumps([deploy.MULTI_GPU, deploy.Model().generate.info().gpus]))"
    proc = run_deploy(code, env={"MODAL_GPU": "H100:2, A100"}, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [{"DEVICES": "auto"}, [["H100", 2], ["A100", 1]]]
    proc = run_deploy(code, env={"MODAL_GPU": "H100:1"}, tmp=tmp_path)
    assert json.loads(proc.stdout)[0] == {}


def test_the_secret_must_hold_auth_token_when_auth_is_on(tmp_path: Path) -> None:
    """``required_keys`` makes Modal refuse the deploy; checked where deploy.py passes it."""
    code = """
        print(json.dumps(deploy.SETTINGS.required_secret_keys))
        print(json.dumps(seen))
    """
    prelude = textwrap.dedent(
        """
        import modal
        seen = []
        _from_name = modal.Secret.from_name
        def _recording(*args, **kwargs):
            seen.append([list(args), kwargs])
            return _from_name(*args, **kwargs)
        modal.Secret.from_name = _recording
        """
    )
    env = {"MODAL_SECRET": "serve", "MODAL_AUTH": "1", "MODAL_SECRET_KEYS": "HF_TOKEN"}
    proc = run_deploy(code, env=env, tmp=tmp_path, prelude=prelude)
    assert proc.returncode == 0, proc.stderr
    keys, calls = (json.loads(line) for line in proc.stdout.splitlines())
    assert keys == ["AUTH_TOKEN", "HF_TOKEN"]
    assert calls == [[["serve"], {"required_keys": ["AUTH_TOKEN", "HF_TOKEN"]}]]


def test_batch_requests_are_retried_and_nothing_else_is(deploy: Any) -> None:
    """A batch request carries its seed, so a retry gives the same image; the web endpoint
    and spawned predictions (webhooks, records) are not idempotent and run once."""
    assert deploy.SETTINGS.batch_retries == 2
    assert deploy.batch_model().generate.info().max_retries == 2
    assert deploy.Model().generate.info().max_retries is None
    assert deploy.Model().web.info().max_retries is None
    job = deploy.batch_job.info()
    assert {p: v.name for p, v in job.volumes.items()} == {"/batch": "diffusion-serve-batch"}
    assert job.timeout == deploy.SETTINGS.batch_timeout_s and job.gpus == []


def test_the_web_endpoint_takes_its_label_and_domains_from_the_settings(tmp_path: Path) -> None:
    env = {"MODAL_WEB_LABEL": "fox-images", "MODAL_CUSTOM_DOMAINS": "img.example.com"}
    proc = run_deploy(
        "s = deploy.SETTINGS; print(json.dumps([s.web_label, s.custom_domain_list]))",
        env=env,
        tmp=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["fox-images", ["img.example.com"]]
    assert deploy_source().count("label=SETTINGS.web_label") == 1  # and the check keeps it so


def deploy_source() -> str:
    return (ROOT / "deploy.py").read_text(encoding="utf-8")


def test_memory_snapshots_can_be_turned_off(tmp_path: Path) -> None:
    """Modal refuses snap=True hooks on a class without snapshots, at import time."""
    proc = run_deploy(
        "deploy.Model().generate.info(); print(json.dumps(deploy.SETTINGS.memory_snapshot))",
        env={"MODAL_MEMORY_SNAPSHOT": "0"},
        tmp=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) is False


def test_engine_settings_travel_to_the_container_but_secrets_do_not(tmp_path: Path) -> None:
    proc = run_deploy(
        "print(json.dumps(deploy.CONTAINER_ENV))",
        env={
            "MODEL": "stabilityai/sd-turbo",
            "MAX_BATCH_SIZE": "4",
            "AUTH_TOKEN": "s3cret",
            "DEVICE": "cpu",
        },
        tmp=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    forwarded = json.loads(proc.stdout)
    assert forwarded["MODEL"] == "stabilityai/sd-turbo"
    assert forwarded["MAX_BATCH_SIZE"] == "4"
    assert "AUTH_TOKEN" not in forwarded  # secrets belong in a modal.Secret
    assert "DEVICE" not in forwarded  # a laptop's DEVICE=cpu must not reach the GPU image


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MODAL_SCALEDOWN_WINDOW_S": "1"}, "MODAL_SCALEDOWN_WINDOW_S=1"),
        ({"MODAL_TIMEOUT_S": "soon"}, "MODAL_TIMEOUT_S=soon"),
        ({"MODAL_MIN_CONTAINERS": "5", "MODAL_MAX_CONTAINERS": "2"}, "MODAL_MIN_CONTAINERS=5"),
        ({"MODAL_EXTRAS": "diffusers,gui"}, "MODAL_EXTRAS names unknown extras ['gui']"),
        ({"MAX_BATCH_SIZE": "0"}, "MAX_BATCH_SIZE=0"),
        ({"MAX_QUEUE_SIZE": "8"}, "MODAL_MAX_INPUTS=32 exceeds MAX_QUEUE_SIZE=8"),
        (
            {
                "MODAL_GPU": "B200",
                "MODAL_TORCH_INDEX_URL": "https://download.pytorch.org/whl/cu126",
            },
            "B200 is a Blackwell GPU, which a CUDA 12.6 torch build",
        ),
        (
            {"MODAL_GPU": "H100, RTX-PRO-6000", "MODAL_TORCH_INDEX_URL": "https://x/whl/cu124"},
            "RTX-PRO-6000 is a Blackwell GPU",
        ),
        (
            {"MODAL_GPU_SNAPSHOT": "1", "MODAL_MEMORY_SNAPSHOT": "0"},
            "MODAL_GPU_SNAPSHOT=1 needs MODAL_MEMORY_SNAPSHOT=1",
        ),
        ({"MODAL_AUTH": "1"}, "MODAL_SECRET names none"),
        ({"MODAL_GPU": "H100,,A100"}, "MODAL_GPU=H100,,A100"),
        ({"MODAL_WEB_LABEL": "My_Label"}, "MODAL_WEB_LABEL=My_Label"),
    ],
)
def test_bad_deploy_settings_fail_naming_the_variable(
    env: dict[str, str], named: str, tmp_path: Path
) -> None:
    proc = run_deploy("", env=env, tmp=tmp_path)
    assert proc.returncode != 0
    assert named in proc.stderr and "Traceback" not in proc.stderr


def test_deploy_setting_names_do_not_collide_with_modal_config(deploy: Any) -> None:
    """Modal reads MODAL_<key> for its own config; ours must never shadow one of those."""
    from modal.config import _SETTINGS

    assert not set(deploy.DeploySettings.model_fields) & set(_SETTINGS)


# -- running the class's code in-process ------------------------------------------------------


def test_generate_local_returns_the_same_png_bytes_as_the_engine(model: Any) -> None:
    result = model.generate.local(dict(SMALL))
    service = make_service()
    try:
        direct = service.generate(GenerateRequest(**SMALL))
    finally:
        service.stop()
    image = result["images"][0]
    assert isinstance(image["data"], bytes) and image["data"].startswith(PNG_MAGIC)
    assert image["data"] == direct.images[0].data
    assert (result["seed"], image["seed"], result["model"]) == (7, 7, direct.model)
    pickle.loads(pickle.dumps(result))  # what Modal sends back to the caller


def test_generate_local_takes_image_bytes_in_the_dict(model: Any) -> None:
    """What a Python caller puts in ``.remote()`` / ``.map()`` inputs: the files' bytes."""
    from tests.test_img2img import half_mask, photo, png

    request = {**SMALL, "image": png(photo()), "mask": png(half_mask()), "strength": 0.6}
    pickle.loads(pickle.dumps(request))  # Modal pickles the inputs on their way
    result = model.generate.local(dict(request))
    service = make_service()
    try:
        direct = service.generate(request)
    finally:
        service.stop()
    assert result["images"][0]["data"] == direct.images[0].data
    assert (result["images"][0]["width"], result["images"][0]["height"]) == (64, 64)


@pytest.mark.parametrize(
    ("request_", "named"),
    [
        ({"image": b"GIF89a, or so it says"}, "image is not an image this server reads"),
        ({"mask": b"\x89PNG"}, "mask needs an image"),
        ({"steps": 500}, "steps"),
        ({"width": 100}, "width must be a multiple of 8, got 100"),
        ({"stepz": 4}, "stepz"),
        ({"width": 2048, "height": 64}, "MAX_WIDTH"),  # a deployment limit, not a schema bound
    ],
)
def test_invalid_requests_raise_a_clear_picklable_error(
    model: Any, request_: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        model.generate.local(request_)
    assert named in str(raised.value)
    # Modal pickles a raised exception to send it to the caller; it must survive the trip.
    assert str(pickle.loads(pickle.dumps(raised.value))) == str(raised.value)


def test_asgi_app_serves_the_local_routes_on_the_same_engine(model: Any) -> None:
    result = model.generate.local(dict(SMALL))
    app = model.web.local()
    service = app.state.service
    calls_before = service.engine.stats.model_calls
    assert calls_before >= 1  # the generate call above ran on this very service
    with TestClient(app) as client:
        assert client.get("/ready").json()["ready"] is True
        response = client.post("/predict", json=SMALL, headers={"accept": "image/png"})
        assert response.status_code == 200, response.text
        assert response.content == result["images"][0]["data"]
        assert response.headers["x-seed"] == "7"
        # Served from the result cache that generate() filled: the very same service.
        assert response.headers["x-cache"] == "hit"
        invalid = client.post("/predict", json={"steps": 500})
        assert invalid.status_code == 422
        assert invalid.json()["error"]["type"] == "invalid_request"
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert "inference_images_generated" in metrics.text
    assert service.engine.stats.model_calls == calls_before


def test_asgi_app_enforces_the_bearer_token(deploy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_TOKEN", "s3cret")  # what the modal.Secret would inject
    obj = deploy.Model()
    try:
        with TestClient(obj.web.local()) as client:
            assert client.post("/predict", json=SMALL).status_code == 401
            assert client.get("/metrics").status_code == 401
            authorized = {"authorization": "Bearer s3cret"}
            assert client.post("/predict", json=SMALL, headers=authorized).status_code == 200
            assert client.get("/ready").status_code == 200
    finally:
        _stop(obj)


def test_nothing_here_contacted_modal() -> None:
    """The fixture's guard really refuses a non-loopback connection."""
    with socket.socket() as sock, pytest.raises(OSError, match="network blocked"):
        sock.connect(("api.modal.com", 443))


# -- the deploy.py contract check -------------------------------------------------------------


def test_check_passes_on_this_repository() -> None:
    assert [str(p) for p in check(ROOT)] == []


def _copy(tmp_path: Path, replace: tuple[str, str] | None = None) -> Path:
    shutil.copy(ROOT / "deploy.py", tmp_path / "deploy.py")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "inference").mkdir()
    if replace:
        path = tmp_path / "deploy.py"
        text = path.read_text()
        assert replace[0] in text, f"deploy.py no longer contains {replace[0]!r}"
        path.write_text(text.replace(replace[0], replace[1], 1))
    return tmp_path


@pytest.mark.parametrize(
    ("replace", "expected"),
    [
        (("gpu=SETTINGS.gpu_request", 'gpu="A10G"'), "gpu='A10G' bypasses the settings"),
        (("label=SETTINGS.web_label", 'label="x"'), "label='x' bypasses the settings"),
        (
            ("required_keys=SETTINGS.required_secret_keys", "required_keys=[]"),
            "without required_keys=SETTINGS.required_secret_keys",
        ),
        (
            ("    gpu=SETTINGS.gpu_request,\n", "    gpu=SETTINGS.gpu_request,\n    retries=3,\n"),
            "retries= on the GPU class retries its web endpoint",
        ),
        (("    timeout=SETTINGS.timeout_s,\n", ""), "@app.cls declares no timeout="),
        (("scaledown_window=SETTINGS", "container_idle_timeout=SETTINGS"), "removed in modal"),
        (("requires_proxy_auth=SETTINGS.proxy_auth", "requires_proxy_auth=True"), "proxy_auth"),
        (('gpu: str = Field("L40S"', 'gpu: str = Field("Z80"'), "not a Modal GPU type"),
        (
            ('.add_local_python_source("inference", *PYTHON_SOURCES)', ""),
            'add_local_python_source("inference")',
        ),
        (("{WEIGHTS_DIR: weights_volume}", '{WEIGHTS_DIR: modal.Volume.from_name("x")}'), "volume"),
        (("@modal.method()", "@modal.batched(max_batch_size=4, wait_ms=10)"), "second batcher"),
        (("@modal.enter(snap=SETTINGS.memory_snapshot)", "@modal.enter(snap=True)"), "SNAPSHOT=0"),
        (
            ("app = modal.App(SETTINGS.app_name)", 'app = modal.App.lookup("a")\nmodal.Cls.lookup'),
            "modal.Cls.lookup is removed",
        ),
        (
            ('        extra_options=f"-c {LOCK_IN_IMAGE}",\n    )\n    .env', "    )\n    .env"),
            'pip_install_from_pyproject installs without the lock: pass extra_options="-c /opt/',
        ),
        (
            ("    .add_local_file(LOCK, LOCK_IN_IMAGE, copy=True)\n", ""),
            "the image must copy requirements.lock in for pip to read",
        ),
        (
            (
                "add_local_file(LOCK, LOCK_IN_IMAGE, copy=True)",
                "add_local_file(LOCK, LOCK_IN_IMAGE)",
            ),
            "the image must copy requirements.lock in",  # mounted at start: too late for pip
        ),
    ],
)
def test_check_names_each_drift(tmp_path: Path, replace: tuple[str, str], expected: str) -> None:
    problems = check(_copy(tmp_path, replace))
    assert any(expected in p.message for p in problems), [str(p) for p in problems]
    assert all(p.line for p in problems)


@pytest.mark.parametrize(
    ("replace", "named"),
    [
        (
            ("scaledown_window_s: int = Field(300", "scaledown_window_s: int = Field(7200"),
            "MODAL_SCALEDOWN_WINDOW_S=7200: Input should be less than or equal to 3600",
        ),
        (
            ("min_containers: int = Field(0", "min_containers: int = Field(50"),
            "MODAL_MIN_CONTAINERS=50 exceeds MODAL_MAX_CONTAINERS=10",
        ),
        (
            ('extras: str = Field("diffusers"', 'extras: str = Field("diffuser"'),
            "MODAL_EXTRAS names unknown extras ['diffuser']",
        ),
    ],
)
def test_a_bad_default_fails_the_import_naming_it(
    tmp_path: Path, replace: tuple[str, str], named: str
) -> None:
    """The check leaves ranges and extras to DeploySettings, which validates its defaults too
    when deploy.py is imported, as every ``modal deploy`` does first."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("deploy.py", "pyproject.toml"):
        shutil.copy(ROOT / name, root / name)
    path = root / "deploy.py"
    assert replace[0] in path.read_text(), f"deploy.py no longer contains {replace[0]!r}"
    path.write_text(path.read_text().replace(replace[0], replace[1], 1))
    proc = run_deploy("", tmp=tmp_path, root=root)
    assert proc.returncode != 0
    assert named in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert [str(p) for p in check(root)] == []  # not the check's to repeat


def test_check_finds_modal_imported_inside_the_package(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    (root / "inference" / "runtime.py").write_text("import os\nfrom modal import App\n")
    problems = check(root)
    assert [(p.file.name, p.line) for p in problems] == [("runtime.py", 2)]
    assert "must not import modal" in problems[0].message


# -- entrypoints, with only the Modal calls themselves replaced ------------------------------


def test_batch_entrypoint_maps_over_the_class_with_exceptions_returned(
    deploy: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``modal run deploy.py::batch`` glue: inputs go to generate.map, failures stay per line."""
    service = make_service()
    seen: dict[str, Any] = {}

    class LocalGenerate:
        def map(self, requests: list[dict[str, Any]], **options: Any) -> Iterator[Any]:
            seen.update(options)
            for request in requests:  # what Modal does with return_exceptions=True
                try:
                    yield service.generate(request).model_dump()
                except Exception as exc:
                    yield exc

    class LocalModel:
        generate = LocalGenerate()

        @classmethod
        def with_options(cls, **options: Any) -> type[LocalModel]:
            seen["retries"] = options["retries"].max_retries
            return cls

    monkeypatch.setattr(deploy, "Model", LocalModel)
    source = tmp_path / "r.jsonl"
    source.write_text(json.dumps(SMALL) + "\n" + json.dumps({**SMALL, "width": 2048}) + "\n")
    try:
        with pytest.raises(SystemExit) as exited:
            deploy.batch(input=str(source), output_dir=str(tmp_path / "out"), quiet=True)
    finally:
        service.stop()
    assert exited.value.code == 1  # one line failed
    assert seen == {"return_exceptions": True, "retries": deploy.SETTINGS.batch_retries}
    lines = (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line)["status"] for line in lines] == ["ok", "failed"]


def test_a_detached_job_goes_to_the_batch_volume_and_runs_there(
    deploy: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``--job``: the file is uploaded and the job spawned (the laptop may leave); the job
    function then runs the same batch code on the volume, resumable, and commits it."""
    events: list[Any] = []

    class Upload:
        def __enter__(self) -> Upload:
            return self

        def __exit__(self, *exc: object) -> None:
            events.append("uploaded")

        def put_file(self, source: Any, remote: str) -> None:
            events.append((Path(source).read_text(), remote))

    class Volume:
        def batch_upload(self, force: bool = False) -> Upload:
            assert force  # a re-run replaces the job file
            return Upload()

        def commit(self) -> None:
            events.append("commit")

    class Spawner:
        def spawn(self, *args: Any) -> Any:
            events.append(("spawn", *args))
            return types.SimpleNamespace(object_id="fc-123")

    job_function = deploy.batch_job
    monkeypatch.setattr(deploy, "batch_volume", Volume())
    monkeypatch.setattr(deploy, "batch_job", Spawner())
    source = tmp_path / "r.jsonl"
    source.write_text(json.dumps(SMALL) + "\n")
    deploy.batch(input=str(source), job="nightly")
    assert events == [
        (source.read_text(), "/nightly/r.jsonl"),
        "uploaded",
        ("spawn", "nightly", "r.jsonl"),
    ]
    with pytest.raises(SystemExit, match=re.escape("--job '../x'")):
        deploy.batch(input=str(source), job="../x")

    # On Modal: /batch/nightly/r.jsonl in, /batch/nightly/out out.
    events.clear()
    (tmp_path / "nightly").mkdir()
    shutil.copy(source, tmp_path / "nightly" / "r.jsonl")
    service = make_service()

    class LocalModel:
        class generate:
            @staticmethod
            def map(requests: list[dict[str, Any]], **options: Any) -> Iterator[Any]:
                return (service.generate(r).model_dump() for r in requests)

        @classmethod
        def with_options(cls, **options: Any) -> type[LocalModel]:
            return cls

    monkeypatch.setattr(deploy, "BATCH_DIR", str(tmp_path))
    monkeypatch.setattr(deploy, "Model", LocalModel)
    try:
        first = job_function.local("nightly", "r.jsonl")
        again = job_function.local("nightly", "r.jsonl")
    finally:
        service.stop()
    assert first == {"generated": 1, "skipped": 0, "failed": 0}
    assert again == {"generated": 0, "skipped": 1, "failed": 0}  # resumed, not redone
    assert events == ["commit", "commit"]
    assert (tmp_path / "nightly" / "out" / "manifest.jsonl").is_file()


def test_download_fetches_into_the_volume_and_commits(
    deploy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []

    def fake_download(model: str, revision: str | None) -> Path:
        calls.append((model, revision))
        return Path("/weights/huggingface/hub/models--org--model/snapshots/abc")

    class Volume:
        def commit(self) -> None:
            calls.append("commit")

    monkeypatch.setattr("inference.weights.download_weights", fake_download)
    monkeypatch.setattr(deploy, "weights_volume", Volume())
    path = deploy.download_weights.local("org/model", "abc")
    assert path.endswith("/snapshots/abc")
    assert calls == [("org/model", "abc"), "commit"]
    with pytest.raises(SystemExit, match="mock model has no weights"):
        deploy.download()
