"""Modal adapter: serve the ``inference`` engine on Modal GPUs, over HTTP and ``.map()``.

Reads top to bottom: settings data, app and image, the GPU class (which also serves the HTTP
app), then the command-line entrypoints.

    modal serve deploy.py                                    # dev: hot-reloading URL
    modal deploy deploy.py                                   # production
    modal run deploy.py::batch --input prompts.jsonl --output-dir out/
    modal run --detach deploy.py::batch --input prompts.jsonl --job nightly   # laptop may leave
    modal run deploy.py::download --model stabilityai/sd-turbo

Every resource below (GPU, timeouts, scale-down, containers, volume) comes from
``DeploySettings``, plain data overridable by ``MODAL_*`` environment variables at deploy time.
``python -m tools.check`` verifies that no decorator bypasses it.
"""

import os
import re
import tomllib
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import modal
from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from inference.registry import Registry, RegistryError, UnknownModel, Version, VersionRef
from inference.registry.pools import GPU_PATTERN
from inference.registry.shared import DictWeights, WeightsRefresher
from inference.settings import Settings, describe_settings_errors, env_names

# -- settings: plain data, overridable at deploy time ----------------------------------------

#: Modal's Blackwell GPUs (compute capability 10.0 / 12.0): they need a CUDA 12.8+ torch build.
BLACKWELL_GPUS = {"B200", "B200+", "RTX-PRO-6000"}
MIN_BLACKWELL_CUDA = (12, 8)
TORCH_INDEX = "https://download.pytorch.org/whl"
DEFAULT_CUDA = "cu126"
BLACKWELL_CUDA = "cu130"


class DeploySettings(BaseSettings):
    """Modal resources; each field is read from ``MODAL_<FIELD>`` at deploy time."""

    model_config = SettingsConfigDict(env_prefix="MODAL_", case_sensitive=False, extra="ignore")

    app_name: str = Field("diffusion-serve", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    #: One GPU type, or fallbacks in order of preference ("H100, A100-80GB").
    gpu: str = Field("L40S", pattern=GPU_PATTERN)
    timeout_s: int = Field(600, ge=10, le=86_400)
    startup_timeout_s: int = Field(1200, ge=10, le=86_400)
    # The pool settings: a registry version's [models.versions.modal] table overrides each.
    scaledown_window_s: int = Field(300, ge=2, le=3600)
    min_containers: int = Field(0, ge=0, le=100)
    max_containers: int = Field(10, ge=1, le=1000)
    buffer_containers: int = Field(0, ge=0, le=100)
    max_inputs: int = Field(32, ge=1, le=1000)
    target_inputs: int = Field(16, ge=1, le=1000)
    volume: str = Field("diffusion-serve-weights", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    memory_snapshot: bool = True
    # Opt-in, alpha on Modal (reported flaky: modal-client#4132): the snapshot also holds GPU
    # memory, so the weights are on the GPU when a container restores.
    gpu_snapshot: bool = False
    proxy_auth: bool = False
    secret: str | None = None
    #: The app requires AUTH_TOKEN: the secret must hold it, or the deploy fails.
    auth: bool = False
    #: More keys the secret must hold (HF_TOKEN for a gated model, WEBHOOK_SECRET, ...).
    secret_keys: str = Field("", pattern=r"^([A-Z_][A-Z0-9_]*(,[A-Z_][A-Z0-9_]*)*)?$")
    #: The web endpoint's URL label (``https://<workspace>--<label>.modal.run``) and domains.
    web_label: str | None = Field(None, pattern=r"^[a-z0-9](-?[a-z0-9]){0,62}$")
    custom_domains: str = Field("", pattern=r"^([a-z0-9.-]+(,[a-z0-9.-]+)*)?$")
    #: Tries after the first for each batch request that fails (a request is idempotent given
    #: its seed, which every batch request has); the web endpoint is never retried.
    batch_retries: int = Field(2, ge=0, le=10)
    #: Detached batch jobs (``--job``): their inputs and outputs live on this volume.
    batch_volume: str = Field("diffusion-serve-batch", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    batch_timeout_s: int = Field(86_400, ge=60, le=86_400)
    extras: str = Field("diffusers", pattern=r"^[a-z0-9_-]+(,[a-z0-9_-]+)*$")
    #: Local packages shipped next to inference/ (MODEL's own package is added by itself).
    python_sources: str = Field("", pattern=r"^([A-Za-z_]\w*(,[A-Za-z_]\w*)*)?$")
    #: Unset: chosen from the GPUs (``torch_index``); empty: PyPI's default (CUDA 13) build.
    torch_index_url: str | None = None
    #: With MODELS_FILE: how often each container reads the fleet's traffic weights from their
    #: modal.Dict, so a re-weight on one container is routed by every other within this long.
    weights_refresh_s: float = Field(1.0, ge=0.1, le=60)

    @property
    def gpus(self) -> list[str]:
        """The GPU types in order of preference, upper case as Modal reports them."""
        return [gpu.strip().upper() for gpu in self.gpu.split(",")]

    @property
    def gpu_request(self) -> str | list[str]:
        """What ``gpu=`` takes: one type, or the fallback list."""
        return self.gpus[0] if len(self.gpus) == 1 else self.gpus

    @property
    def torch_index(self) -> str:
        """The torch wheel index: CUDA 13.0 builds when any GPU is a Blackwell, else 12.6.

        torch 2.12+ publishes CUDA 12.6 and 13.0 builds (no 12.8). 12.6 has no Blackwell
        kernels; 13.0 runs on every GPU Modal offers (Turing to Blackwell) but needs a host
        driver >= 580, so it is taken only where it is needed and 12.6 stays everywhere else.
        One image serves the whole fallback list, so one Blackwell in it decides.
        """
        if self.torch_index_url is not None:
            return self.torch_index_url
        cuda = BLACKWELL_CUDA if set(self.gpus) & BLACKWELL_GPUS else DEFAULT_CUDA
        return f"{TORCH_INDEX}/{cuda}"

    @property
    def required_secret_keys(self) -> list[str]:
        """Keys Modal checks the secret for at deploy time (``Secret.from_name``)."""
        keys = ["AUTH_TOKEN"] if self.auth else []
        return keys + [key for key in self.secret_keys.split(",") if key and key not in keys]

    @property
    def custom_domain_list(self) -> list[str] | None:
        return [domain for domain in self.custom_domains.split(",") if domain] or None

    @property
    def experimental_options(self) -> dict[str, Any]:
        """Modal's experimental switches that these settings turn on."""
        return {"enable_gpu_snapshot": True} if self.gpu_snapshot else {}

    @property
    def pool_options(self) -> dict[str, Any]:
        """What ``Cls.with_options`` takes for a pool sized by these settings (a registry
        version's: ``pool_settings``), its DTYPE the one its GPUs run natively."""
        return {
            "gpu": self.gpu_request,
            "env": {"DTYPE": gpu_dtype(self.gpus)},
            "scaledown_window": self.scaledown_window_s,
            "max_containers": self.max_containers,
            "buffer_containers": self.buffer_containers,
        }

    @property
    def batch_retry_policy(self) -> modal.Retries:
        return modal.Retries(
            max_retries=self.batch_retries, initial_delay=1.0, backoff_coefficient=2.0
        )

    @model_validator(mode="after")
    def _consistent(self) -> "DeploySettings":
        for low, high in (("min_containers", "max_containers"), ("target_inputs", "max_inputs")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(
                    f"MODAL_{low.upper()}={getattr(self, low)} exceeds MODAL_{high.upper()}="
                    f"{getattr(self, high)}; lower one or raise the other"
                )
        if self.gpu_snapshot and not self.memory_snapshot:
            raise ValueError(
                "MODAL_GPU_SNAPSHOT=1 needs MODAL_MEMORY_SNAPSHOT=1 (a GPU snapshot is a memory "
                "snapshot that also holds GPU memory); set both, or neither"
            )
        if (self.auth or self.secret_keys) and not self.secret:
            raise ValueError(
                f"MODAL_AUTH/MODAL_SECRET_KEYS ask for {self.required_secret_keys} in a secret, "
                "but MODAL_SECRET names none; create one (modal secret create NAME "
                "AUTH_TOKEN=...) and set MODAL_SECRET=NAME"
            )
        blackwell = sorted(set(self.gpus) & BLACKWELL_GPUS)
        cuda = index_cuda(self.torch_index)
        if blackwell and cuda is not None and cuda < MIN_BLACKWELL_CUDA:
            raise ValueError(
                f"MODAL_GPU={self.gpu}: {', '.join(blackwell)} is a Blackwell GPU, which a CUDA "
                f"{cuda[0]}.{cuda[1]} torch build ({self.torch_index}) has no kernels for: the "
                f"image would build and fail on every CUDA call; unset MODAL_TORCH_INDEX_URL "
                f"({TORCH_INDEX}/{BLACKWELL_CUDA} is chosen) or drop {', '.join(blackwell)}"
            )
        return self


def index_cuda(url: str) -> tuple[int, int] | None:
    """The CUDA version of a torch wheel index (``.../whl/cu126`` -> (12, 6)); PyPI's default
    torch (an empty URL) is a CUDA 13 build; None for an index whose name does not say."""
    if not url:
        return (13, 0)
    found = re.search(r"/cu(\d+)(\d)/?$", url)
    return (int(found[1]), int(found[2])) if found else None


def load_settings() -> DeploySettings:
    """The settings, or an exit whose message names each bad variable and value.

    The engine settings are checked here too, so a bad MAX_* fails the deploy on your machine
    instead of every container's start.
    """
    try:
        settings = DeploySettings()
        engine = Settings()
    except ValidationError as exc:
        prefix = "MODAL_" if exc.title == DeploySettings.__name__ else ""
        problems = describe_settings_errors(exc, prefix)
        raise SystemExit(f"invalid deploy settings: {'; '.join(problems)}") from None
    if settings.max_inputs > engine.max_queue_size:
        raise SystemExit(
            f"MODAL_MAX_INPUTS={settings.max_inputs} exceeds MAX_QUEUE_SIZE="
            f"{engine.max_queue_size}: the engine would refuse the inputs Modal sends beyond its "
            "queue; lower MODAL_MAX_INPUTS or raise MAX_QUEUE_SIZE"
        )
    if PYPROJECT.exists():  # locally; the container has no pyproject.toml and needs no check
        known = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
        unknown = sorted(set(settings.extras.split(",")) - set(known))
        if unknown:
            raise SystemExit(f"MODAL_EXTRAS names unknown extras {unknown}; use {sorted(known)}")
    return settings


PYPROJECT = Path(__file__).with_name("pyproject.toml")
SETTINGS = load_settings()

#: Where the weights volume is mounted; the Hugging Face cache lives on it.
WEIGHTS_DIR = "/weights"
#: torch.compile's caches (Inductor's FX graphs and kernels, Triton's binaries) on the volume,
#: so TORCH_COMPILE=1 compiles in the first container and later ones load the results.
COMPILE_CACHE_ENV = {
    "TORCHINDUCTOR_CACHE_DIR": f"{WEIGHTS_DIR}/torch-compile/inductor",
    "TRITON_CACHE_DIR": f"{WEIGHTS_DIR}/torch-compile/triton",
    "TORCHINDUCTOR_FX_GRAPH_CACHE": "1",
    "TORCHINDUCTOR_AUTOGRAD_CACHE": "1",
}
#: GPUs without native bfloat16 (compute capability < 8). DTYPE=auto would pick float16 there
#: and bfloat16 elsewhere; the container is told the same choice up front, because the weights
#: load before the memory snapshot, when no GPU is visible to ask (a DTYPE you set wins). One
#: such GPU in the fallback list makes it float16, which every GPU runs.
FLOAT16_GPUS = {"T4", "V100", "P100"}


def gpu_dtype(gpus: list[str]) -> str:
    """The DTYPE every GPU of ``gpus`` (a fallback list) runs natively."""
    return "float16" if {gpu.split(":")[0] for gpu in gpus} & FLOAT16_GPUS else "bfloat16"


GPU_DTYPE = gpu_dtype(SETTINGS.gpus)
#: Several GPUs a container ("H100:2"): one model replica per GPU over one queue (DEVICES=auto).
MULTI_GPU = (
    {"DEVICES": "auto"} if any(int(g.partition(":")[2] or 1) > 1 for g in SETTINGS.gpus) else {}
)

# The container re-imports this file, so deploy-time settings travel with it as env vars:
# MODAL_* keeps the definitions above identical in the container, and the engine settings
# (MODEL, MAX_BATCH_SIZE, ...) configure the engine. Secrets (AUTH_TOKEN, HF_TOKEN,
# WEBHOOK_SECRET) never travel this way: put them in the modal.Secret named by MODAL_SECRET.
# DEVICE stays "cuda".
_LOCAL_ONLY = ("auth_token", "webhook_secret", "host", "port", "device")
_FORWARDED = {f"MODAL_{name.upper()}" for name in DeploySettings.model_fields} | {
    name for name in env_names() if name.lower() not in _LOCAL_ONLY
}
CONTAINER_ENV = {name: os.environ[name] for name in sorted(_FORWARDED) if name in os.environ}

# Your own model class (MODEL=package.module:Class) must be importable in the container: its
# top-level package travels with inference/ (an installed package is copied from where it lives).
_OWN_MODEL = re.match(r"^([A-Za-z_]\w*)[\w.]*:", os.environ.get("MODEL", ""))
_SOURCES = {s for s in SETTINGS.python_sources.split(",") if s}
PYTHON_SOURCES = sorted((_SOURCES | ({_OWN_MODEL[1]} if _OWN_MODEL else set())) - {"inference"})

# -- the registry (MODELS_FILE): one pool of GPU containers per version ----------------------

#: Where the registry file's folder (the file, and the weights files it names relative to it)
#: lies in the image; the containers read MODELS_FILE there.
REGISTRY_DIR = "/registry"


def load_registry() -> Registry | None:
    """MODELS_FILE's registry, checked on your machine before a deploy; None without one (one
    model, served as before registries). An exit naming every problem of a bad file."""
    engine = Settings()
    if engine.models_file is None:
        return None
    try:
        return Registry.from_settings(engine)
    except RegistryError as exc:
        raise SystemExit("invalid registry:\n  " + "\n  ".join(exc.problems)) from None


def pool_settings(registry: Registry) -> dict[VersionRef, DeploySettings]:
    """Each version's pool: the MODAL_* settings with its ``[models.versions.modal]`` table
    applied, checked as MODAL_* is, against the torch build of the one image every pool runs
    (a Blackwell GPU for one version needs the image's CUDA to have its kernels)."""
    pools: dict[VersionRef, DeploySettings] = {}
    problems: list[str] = []
    image_index = {"torch_index_url": SETTINGS.torch_index}
    for spec in registry.models.values():
        for version in spec.versions:
            values = {**SETTINGS.model_dump(), **image_index, **version.pool.overrides()}
            try:
                pools[version.ref] = DeploySettings(**values)
            except ValidationError as exc:
                found = describe_settings_errors(exc, "MODAL_")
                problems += [f"version {version.ref} ([models.versions.modal]): {p}" for p in found]
    if problems:
        raise SystemExit("invalid registry pools:\n  " + "\n  ".join(problems))
    return pools


def served_ref(registry: Registry, version: str) -> VersionRef:
    """The version a container serves: its pool's ``version`` parameter, else the default."""
    from inference.fleet import default_ref

    if not version:
        return default_ref(registry)
    model, _, name = version.partition("@")
    registry.version(VersionRef(model, name))  # KeyError: a pool of no registry version
    return VersionRef(model, name)


def served_settings(settings: Settings, version: str) -> Settings:
    """The engine settings of the version a container serves (``settings`` without MODELS_FILE)."""
    if settings.models_file is None:
        return settings
    registry = Registry.from_settings(settings)
    return registry.version(served_ref(registry, version)).settings


def served_fleet(settings: Settings, version: str, service: Any, store: Any) -> Any:
    """The HTTP app's fleet in a pool's container: ``service`` serves requests naming no model
    (this pool's version), every other version runs in its own pool (``remote_builder``), and
    the weights live in ``store``, shared with every container.

    No memory budget applies: nothing but ``service`` holds weights in this container."""
    from inference.fleet import Fleet

    spec = Registry.from_settings(settings)
    ref = served_ref(spec, version)
    registry = Registry(
        list(spec.models.values()), ref.model, ref.version, weights_backend=DictWeights(store)
    )
    return Fleet(registry, service, build=remote_builder(registry))


#: At most this many calls in flight from one router to one version's pool: each is a thread
#: blocked on its call, so the pool's own capacity (max_inputs x max_containers) is capped.
MAX_REMOTE_CALLS = 32


class ModalPool:
    """A version's pool (``pool``) as ``inference.models.remote`` calls it."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def describe(self) -> Any:
        return self.handle.describe.remote()

    def generate(self, jobs: list[Any]) -> list[Any]:
        return self.handle.generate_jobs.remote(jobs)


def remote_builder(registry: Registry) -> Any:
    """``Fleet``'s builder in a router: a version's ``Service`` over stand-ins for its pool,
    as many as calls may be in flight to it (each its own device, so none waits on another's
    turn). Validation, the result cache and metrics stay here with the version's settings."""
    from inference.models import build_model
    from inference.models.remote import RemoteVersion, stand_ins
    from inference.service import Service

    versions: dict[VersionRef, RemoteVersion] = {}  # described once, however often loaded

    def build(version: Version) -> Service:
        ref, settings = version.ref, version.settings
        sized = POOLS[ref]
        count = min(sized.max_inputs * sized.max_containers, MAX_REMOTE_CALLS)
        device = f"modal:{ref}"
        remote = versions.setdefault(ref, RemoteVersion(ModalPool(pool(ref)), device))
        # A device per call in flight, one job per call: no local batching wait.
        routed = settings.model_copy(
            update={"devices": ",".join([device] * count), "max_wait_ms": 0}
        )
        first, *others = stand_ins(remote, build_model(settings), count)
        return Service(first, routed, replicas=others)

    return build


def serve_jobs(service: Any, jobs: list[Any]) -> list[Any]:
    """A router's jobs (validated there, with this version's settings) through this pool's
    engine, batched with everything else it runs; each job's raw pixels and safety flags."""
    for job in jobs:
        service.model.check(job)  # what the router's stand-in cannot know (InvalidRequest)
    pending = [service.engine.queue(job) for job in jobs]
    return [(output.pixels, output.nsfw) for output in (each.output() for each in pending)]


REGISTRY = load_registry()
POOLS = pool_settings(REGISTRY) if REGISTRY is not None else {}
if REGISTRY is not None:
    _MODELS_FILE = Settings().models_file
    assert _MODELS_FILE is not None
    CONTAINER_ENV["MODELS_FILE"] = f"{REGISTRY_DIR}/{_MODELS_FILE.name}"

# -- app and image ---------------------------------------------------------------------------

app = modal.App(SETTINGS.app_name)
weights_volume = modal.Volume.from_name(SETTINGS.volume, create_if_missing=True)
# The predictions API's shared state (inference/predictions/modal_store.py): records, ids, ends.
prediction_records = modal.Dict.from_name(
    f"{SETTINGS.app_name}-predictions", create_if_missing=True
)
prediction_meta = modal.Dict.from_name(
    f"{SETTINGS.app_name}-prediction-meta", create_if_missing=True
)
# With a registry: each model's live traffic weights, read by every container (registry.shared).
model_weights = modal.Dict.from_name(f"{SETTINGS.app_name}-weights", create_if_missing=True)
# With required_keys Modal refuses the deploy when the secret lacks one (AUTH_TOKEN with
# MODAL_AUTH=1), instead of the app starting open or failing on every request.
secrets = (
    [modal.Secret.from_name(SETTINGS.secret, required_keys=SETTINGS.required_secret_keys)]
    if SETTINGS.secret
    else []
)
#: Detached batch jobs: each job's input and outputs (images, manifest) under /batch/<job>/.
BATCH_DIR = "/batch"
batch_volume = modal.Volume.from_name(SETTINGS.batch_volume, create_if_missing=True)

# Every package at the version requirements.lock pins (`make lock`); pip reads the lock while the
# image builds, so it is copied in first. The lock leaves torch out (each runtime needs its own
# build): the image takes the Makefile's and the Dockerfile's torch, as the CUDA build the GPUs
# need (DeploySettings.torch_index: 12.6, or 13.0 for Blackwell).
LOCK = PYPROJECT.with_name("requirements.lock")
LOCK_IN_IMAGE = "/opt/requirements.lock"
TORCH = "torch==2.13.0"
image = (
    modal.Image.debian_slim(python_version="3.11")
    .add_local_file(LOCK, LOCK_IN_IMAGE, copy=True)
    .pip_install(
        TORCH,
        extra_index_url=SETTINGS.torch_index or None,
        extra_options=f"-c {LOCK_IN_IMAGE}",
    )
    .pip_install_from_pyproject(
        str(PYPROJECT),
        optional_dependencies=SETTINGS.extras.split(","),
        extra_options=f"-c {LOCK_IN_IMAGE}",
    )
    .env({"HF_HOME": f"{WEIGHTS_DIR}/huggingface", "DEVICE": "cuda", "DTYPE": GPU_DTYPE})
    .env(COMPILE_CACHE_ENV)
    .env(MULTI_GPU)
    .add_local_python_source("inference", *PYTHON_SOURCES)
)
if REGISTRY is not None:  # the registry file and the weights files beside it
    image = image.add_local_dir(_MODELS_FILE.resolve().parent, REGISTRY_DIR)

# -- the GPU class: one engine per container, shared by .map() inputs and HTTP ---------------


@app.cls(
    image=image,
    gpu=SETTINGS.gpu_request,
    volumes={WEIGHTS_DIR: weights_volume},
    secrets=secrets,
    env=CONTAINER_ENV,
    timeout=SETTINGS.timeout_s,
    startup_timeout=SETTINGS.startup_timeout_s,
    scaledown_window=SETTINGS.scaledown_window_s,
    min_containers=SETTINGS.min_containers,
    max_containers=SETTINGS.max_containers,
    buffer_containers=SETTINGS.buffer_containers,
    enable_memory_snapshot=SETTINGS.memory_snapshot,
    experimental_options=SETTINGS.experimental_options,
)
@modal.concurrent(max_inputs=SETTINGS.max_inputs, target_inputs=SETTINGS.target_inputs)
class Model:
    """The engine on a GPU. Concurrent inputs reach its dynamic batcher (no @modal.batched).

    With a registry each version is its own pool of containers (``pool``): Modal scales every
    parameter set of a class on its own. Without one, ``version`` is empty and the class is
    the one pool of MODEL, exactly as before registries.
    """

    #: The registry version this pool serves (``draft@v2``); empty: the registry's default
    #: version, or MODEL without a registry.
    version: str = modal.parameter(default="")

    @modal.enter(snap=SETTINGS.memory_snapshot)
    def build(self) -> None:
        """Before the snapshot (if enabled): imports, the model, and its weights in CPU memory
        (on the GPU too with MODAL_GPU_SNAPSHOT), so a restore skips reading and parsing them.

        Only deployment data (forwarded env) is read here; secrets are read after restore, so
        a gated hub model that is not on the volume yet loads in ``start`` instead.
        """
        import importlib
        import logging
        import time

        from inference.logs import configure_logging
        from inference.models import build_model

        # Heavy imports (fastapi, the engine, torch with the backend) happen once, pre-snapshot.
        importlib.import_module("inference.http.app")

        settings = served_settings(Settings(), self.version)
        configure_logging(settings.log_level)
        self.model = build_model(settings)
        started = time.perf_counter()
        if SETTINGS.gpu_snapshot:
            self.model.load()
        elif (preload := getattr(self.model, "preload", None)) is None or not preload():
            return
        logging.getLogger("deploy").info(
            "weights in %s memory before the snapshot (%.2fs)",
            "GPU" if SETTINGS.gpu_snapshot else "CPU",
            time.perf_counter() - started,
        )

    @modal.enter(snap=False)
    def start(self) -> None:
        """After restore: move the weights to the GPU, warm up, start the batching worker; the
        predictions API keeps its state in Modal's Dicts and calls, not in this container."""
        from inference.http.app import create_app
        from inference.http.protocols.predictions import use_store
        from inference.predictions import WebhookSender
        from inference.predictions.modal_store import ModalRunner, ModalStore
        from inference.service import Service

        settings = Settings()  # now with the secret's AUTH_TOKEN / HF_TOKEN / WEBHOOK_SECRET
        self.service = Service(self.model, served_settings(settings, self.version)).start()
        self.refresher = None
        self.fleet = None
        if settings.models_file is None:
            self.app = create_app(settings, self.service)
        else:  # this version serves requests naming no model; re-weights reach every container
            fleet = served_fleet(settings, self.version, self.service, model_weights)
            self.refresher = WeightsRefresher(fleet.registry, SETTINGS.weights_refresh_s).start()
            self.fleet = fleet
            self.app = create_app(settings, fleet=fleet)
        records, meta = SharedDict(prediction_records), SharedDict(prediction_meta)
        webhooks = WebhookSender(settings)
        self.jobs = ModalRunner(self.service, records, meta, webhooks)
        use_store(self.app, ModalStore(settings, ModalCalls(), records, meta, webhooks))
        if settings.torch_compile:  # keep what warm-up compiled for the next container
            weights_volume.commit()

    @modal.exit()
    def stop(self) -> None:
        """The server's shutdown path: drain for SHUTDOWN_GRACE_S, then fail what is left."""
        self.service.stop(grace_s=self.service.settings.shutdown_grace_s)
        self.jobs.webhooks.close(timeout_s=10)
        if self.refresher is not None:
            self.refresher.stop()

    @modal.method()
    def generate(self, request: dict[str, Any]) -> dict[str, Any]:
        """One request (GenerateRequest fields) -> GenerateResult as a dict with image bytes.

        With a registry the request may name its ``model`` (a name or ``name@version``), routed
        as /predict routes it (another version runs in its own pool), and the result's
        ``version`` says which version served it; without one, the pool's version serves it.
        An invalid request raises ``InvalidRequest`` (a ``ValueError``) naming the field and value;
        an unknown model, ``UnknownModel`` (one too) listing the names.
        """
        if self.fleet is None:
            return self.service.generate(request).model_dump()
        return self.fleet.generate(request).model_dump()

    @modal.method()
    def describe(self) -> Any:
        """This pool's loaded model as a router validates for it (``models.remote``)."""
        from inference.models.remote import Description

        return Description.of(self.service.model)

    @modal.method()
    def generate_jobs(self, jobs: list[Any]) -> list[Any]:
        """A router's validated jobs -> each one's raw pixels and safety flags (``serve_jobs``)."""
        return serve_jobs(self.service, jobs)

    @modal.method()
    async def run_prediction(self, prediction: Any, job: Any) -> dict[str, Any]:
        """A prediction's job, spawned by the predictions API of whichever container took it;
        progress goes to the Dicts, the result (as ``generate``'s) to the ``FunctionCall``."""
        return await self.jobs.run(prediction, job)

    # -- the web front end: the local server's app, on this container's engine ---------------

    @modal.asgi_app(
        requires_proxy_auth=SETTINGS.proxy_auth,
        label=SETTINGS.web_label,
        custom_domains=SETTINGS.custom_domain_list,
    )
    def web(self) -> Any:
        """The same FastAPI app as ``python -m inference serve``: routes, errors, auth, metrics."""
        return self.app


# -- Modal's primitives as inference.predictions.modal_store expects them (translation only) -------


class SharedDict:
    """A ``modal.Dict`` through its async calls."""

    def __init__(self, dictionary: modal.Dict) -> None:
        self.dictionary = dictionary

    async def get(self, key: str) -> Any:
        return await self.dictionary.get.aio(key)

    async def put(self, key: str, value: Any, skip_if_exists: bool = False) -> bool:
        return await self.dictionary.put.aio(key, value, skip_if_exists=skip_if_exists)

    async def pop(self, key: str) -> Any:
        return await self.dictionary.pop.aio(key, None)

    async def len(self) -> int:
        return await self.dictionary.len.aio()

    async def values(self) -> list[Any]:
        return [value async for value in self.dictionary.values.aio()]


class ModalCalls:
    """Jobs as spawned calls of ``Model.run_prediction``, followed through ``FunctionCall``."""

    async def spawn(self, prediction: Any, job: Any) -> str:
        return (await Model().run_prediction.spawn.aio(prediction, job)).object_id

    async def result(self, call_id: str) -> Any:
        from inference.results import GenerateResult

        try:
            output = await modal.FunctionCall.from_id(call_id).get.aio(timeout=0)
        except modal.exception.OutputExpiredError:
            raise
        except TimeoutError:  # still running
            return None
        return GenerateResult.model_validate(output)

    async def cancel(self, call_id: str) -> None:
        await modal.FunctionCall.from_id(call_id).cancel.aio()


# -- entrypoints -----------------------------------------------------------------------------


@app.function(
    image=image,
    volumes={WEIGHTS_DIR: weights_volume},
    secrets=secrets,
    env=CONTAINER_ENV,
    timeout=SETTINGS.startup_timeout_s,
)
def download_weights(model: str, revision: str | None = None) -> str:
    """Download a hub model into the weights volume, so containers start without the Hub."""
    from inference.weights import download_weights as download

    path = download(model, revision)
    weights_volume.commit()
    return str(path)


@app.local_entrypoint()
def download(model: str = "", revision: str = "") -> None:
    """``modal run deploy.py::download --model ID [--revision REV]`` (default: $MODEL)."""
    model = model or os.environ.get("MODEL", "")
    if not model or model == "mock":
        raise SystemExit("the mock model has no weights to download; pass --model <hub id>")
    path = download_weights.remote(model, revision or os.environ.get("MODEL_REVISION") or None)
    print(f"{model} is in volume {SETTINGS.volume!r} at {path}")


def pool(ref: VersionRef | None = None, *, retried: bool = False, cls: Any = None) -> Any:
    """The class instance that is ``ref``'s pool of containers (None: the one pool of a
    deployment without a registry), sized by its ``[models.versions.modal]`` table.

    ``with_options`` takes the GPU, the scale-down window and max/buffer containers per
    variant; ``min_containers`` it does not take in modal 1.6, so ``scale`` sets it through
    ``update_autoscaler`` on the deployed pool. Batch requests are retried where a failure may
    be passing (a preempted or crashed container): a request with its seed gives the same image
    on a retry; the web endpoint is never retried.
    """
    cls = Model if cls is None else cls
    if ref is not None:
        cls = cls.with_options(**POOLS[ref].pool_options)
    if retried:
        cls = cls.with_options(retries=SETTINGS.batch_retry_policy)
    return cls(version=str(ref)) if ref is not None else cls()


@app.local_entrypoint()
def scale() -> None:
    """``modal run deploy.py::scale`` after ``modal deploy``: each version's warm containers."""
    if REGISTRY is None:
        raise SystemExit(
            "scale sizes the pools of a registry's versions; set MODELS_FILE (without one, "
            "MODAL_MIN_CONTAINERS and MODAL_BUFFER_CONTAINERS apply at deploy)"
        )
    for version, sizes in scale_pools().items():
        print(f"{version}: {sizes}")


def batch_model() -> Any:
    """The class for batch requests without a registry, retried (``pool``). It scales apart
    from the web endpoint's containers, which are never retried."""
    return pool(retried=True)


def route_lines(
    registry: Registry, requests: list[dict[str, Any]]
) -> tuple[dict[VersionRef, list[int]], dict[int, UnknownModel]]:
    """Each line's version (its ``model``: a name, ``name@version``, or none for the default),
    as line numbers by version, and the lines naming no model this registry has."""
    routed: dict[VersionRef, list[int]] = defaultdict(list)
    unknown: dict[int, UnknownModel] = {}
    for position, request in enumerate(requests):
        try:
            routed[registry.route(request.get("model"))].append(position)
        except UnknownModel as exc:
            unknown[position] = exc
    return routed, unknown


def map_on_pools(registry: Registry, requests: list[dict[str, Any]]) -> Iterator[Any]:
    """``run_batch``'s map over a registry: each line on its version's pool, the pools in
    parallel, each in input order so a failure is attributed to its line. A line naming an
    unknown model fails before any GPU call; ``model`` stays out of what a pool receives (the
    pool serves exactly its version)."""
    routed, unknown = route_lines(registry, requests)
    yield from unknown.items()
    if not routed:
        return

    def run(ref: VersionRef, lines: list[int]) -> list[tuple[int, Any]]:
        sent = [{k: v for k, v in requests[i].items() if k != "model"} for i in lines]
        results = pool(ref, retried=True).generate.map(sent, return_exceptions=True)
        served = str(ref)  # the manifest's ``version``, as a local fleet's batch records it
        return [
            (line, {**result, "version": served} if isinstance(result, dict) else result)
            for line, result in zip(lines, results, strict=True)
        ]

    with ThreadPoolExecutor(len(routed), thread_name_prefix="pool-map") as threads:
        for done in [threads.submit(run, ref, lines) for ref, lines in routed.items()]:
            yield from done.result()


def map_on_modal(requests: list[dict[str, Any]]) -> Any:
    """``run_batch``'s map: in input order, so every failure is attributed to its line (an
    exception returned out of order carries no trace of its input); images are written as
    they come. With a registry each line goes to its model's pool (``map_on_pools``)."""
    if REGISTRY is not None:
        return map_on_pools(batch_registry(), requests)
    return enumerate(batch_model().generate.map(requests, return_exceptions=True))


def batch_registry() -> Registry:
    """The registry a batch routes by: the live weights every container routes by."""
    return Registry.from_settings(Settings(), weights_backend=DictWeights(model_weights))


def scale_pools() -> dict[str, dict[str, int]]:
    """Give each deployed version's pool its ``min_containers`` and ``buffer_containers`` (the
    settings ``with_options`` cannot carry); Modal resets them at each deploy, so run this
    after one: ``modal run deploy.py::scale``."""
    deployed = modal.Cls.from_name(SETTINGS.app_name, "Model")
    applied = {}
    for ref, settings in POOLS.items():
        sizes = {
            "min_containers": settings.min_containers,
            "buffer_containers": settings.buffer_containers,
        }
        pool(ref, cls=deployed).update_autoscaler(**sizes)
        applied[str(ref)] = sizes
    return applied


@app.function(
    image=image,
    volumes={BATCH_DIR: batch_volume},
    env=CONTAINER_ENV,
    timeout=SETTINGS.batch_timeout_s,
)
def batch_job(job: str, name: str) -> dict[str, int]:
    """A detached batch job: ``/batch/<job>/<name>`` in, images and manifest.jsonl to
    ``/batch/<job>/out``, on the batch volume; a re-run of the same job resumes it."""
    from inference.jobs import run_batch

    folder = Path(BATCH_DIR) / job
    summary = run_batch(folder / name, folder / "out", map_on_modal, progress=False)
    batch_volume.commit()
    return {"generated": summary.done, "skipped": summary.skipped, "failed": summary.failed}


@app.local_entrypoint()
def batch(input: str, output_dir: str = "out", quiet: bool = False, job: str = "") -> None:
    """``modal run deploy.py::batch --input prompts.jsonl --output-dir out/`` on Modal GPUs.

    With ``--job NAME`` (run as ``modal run --detach ...``) the job file goes to the batch
    volume and the job runs there, so the laptop may disconnect; fetch the results with
    ``modal volume get``.
    """
    from inference.jobs import run_batch

    if job:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", job) or job.startswith("."):
            raise SystemExit(f"--job {job!r}: use letters, digits, '.', '_' or '-' (a folder name)")
        source = Path(input)
        with batch_volume.batch_upload(force=True) as upload:
            upload.put_file(source, f"/{job}/{source.name}")
        call = batch_job.spawn(job, source.name)
        print(
            f"job {job!r} runs on Modal as {call.object_id}; follow it in the dashboard, then:\n"
            f"  modal volume get {SETTINGS.batch_volume} {job}/out {output_dir}"
        )
        return
    summary = run_batch(Path(input), Path(output_dir), map_on_modal, progress=not quiet)
    print(summary.describe())
    if summary.failed:
        raise SystemExit(1)
