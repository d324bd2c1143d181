"""Modal contract check: deploy.py declares its resources from its settings data, and only there.

Modal accepts a hard-coded ``gpu="A10G"`` happily; the harm is that ``MODAL_GPU`` then silently
stops working and the README's settings table lies. So this check reads deploy.py as an AST
(never importing modal) and asks: does every resource keyword of ``@app.cls`` /
``@app.function`` / ``@modal.concurrent`` / ``@modal.asgi_app`` read ``SETTINGS.<field>``, is the
default GPU one Modal offers, is the image built from pyproject.toml at requirements.lock's
versions with the ``inference`` package added, is nothing deprecated or removed in modal 1.x
used, and does the runtime-agnostic package stay free of ``import modal``?

The ranges of the settings (timeouts, container counts, min <= max) and the extras named are not
checked here: ``DeploySettings`` validates them, defaults included, when deploy.py is imported,
which every ``modal deploy`` does first.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from tools.checks import Problem, module_constants
from tools.checks.lock import LOCK

SETTINGS_CLASS = "DeploySettings"
SETTINGS_NAME = "SETTINGS"

#: Resource keyword -> the DeploySettings fields it may read.
RESOURCE_FIELDS: dict[str, set[str]] = {
    "gpu": {"gpu", "gpu_request"},  # gpu_request: the fallback list parsed from gpu
    "timeout": {"timeout_s", "startup_timeout_s", "batch_timeout_s"},
    "startup_timeout": {"startup_timeout_s"},
    "scaledown_window": {"scaledown_window_s"},
    "min_containers": {"min_containers"},
    "max_containers": {"max_containers"},
    "buffer_containers": {"buffer_containers"},
    "enable_memory_snapshot": {"memory_snapshot"},
    "experimental_options": {"experimental_options"},  # a property over gpu_snapshot
    "max_inputs": {"max_inputs"},
    "target_inputs": {"target_inputs"},
    "requires_proxy_auth": {"proxy_auth"},
    "label": {"web_label"},
    "custom_domains": {"custom_domain_list"},
    "retries": {"batch_retry_policy"},
}
#: Volumes deploy.py may mount: the weights and the detached batch jobs' files.
VOLUME_FIELDS = ("volume", "batch_volume")
#: Keywords the GPU class must declare.
REQUIRED_CLS_KEYWORDS = (
    "gpu",
    "volumes",
    "timeout",
    "scaledown_window",
    "min_containers",
    "max_containers",
    "enable_memory_snapshot",
)
#: Removed or deprecated in modal 1.x, with the replacement.
DEPRECATED_KEYWORDS = {
    "keep_warm": "min_containers",
    "concurrency_limit": "max_containers",
    "container_idle_timeout": "scaledown_window",
    "allow_concurrent_inputs": "@modal.concurrent(max_inputs=...)",
}
DEPRECATED_ATTRIBUTES = {
    "web_endpoint": "modal.fastapi_endpoint",
    "Stub": "modal.App",
    "Mount": "Image.add_local_python_source / add_local_dir",
}
#: ``Function.lookup`` / ``Cls.lookup`` are removed; ``App.lookup`` is current API.
REMOVED_LOOKUPS = {"Function": "modal.Function.from_name", "Cls": "modal.Cls.from_name"}
KNOWN_GPUS = {
    "T4",
    "L4",
    "A10",
    "A10G",
    "A100",
    "A100-40GB",
    "A100-80GB",
    "L40S",
    "H100",
    "H100!",
    "H200",
    "B200",
    "B200+",
    "RTX-PRO-6000",
    "ANY",
}


def check(root: Path) -> list[Problem]:
    """Every problem in ``root/deploy.py`` and every ``import modal`` under ``root/inference``."""
    problems = _package_stays_modal_free(root)
    path = root / "deploy.py"
    if not path.is_file():
        return [*problems, Problem(path, None, "deploy.py is missing: the Modal adapter")]
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as exc:
        return [*problems, Problem(path, exc.lineno, f"deploy.py does not parse: {exc.msg}")]
    fields = _settings_defaults(tree)
    if fields is None:
        problems.append(
            Problem(path, None, f"no class {SETTINGS_CLASS}: keep resources in one data class")
        )
        fields = {}
    else:
        problems += [Problem(path, line, msg) for line, msg in _check_defaults(fields)]
    problems += [Problem(path, line, msg) for line, msg in _check_declarations(tree, fields)]
    return problems


def _package_stays_modal_free(root: Path) -> list[Problem]:
    problems = []
    for source in sorted((root / "inference").rglob("*.py")):
        try:
            tree = ast.parse(source.read_text(encoding="utf-8"))
        except SyntaxError:
            continue  # not this check's business
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(name == "modal" or name.startswith("modal.") for name in names):
                problems.append(
                    Problem(
                        source,
                        node.lineno,
                        "inference/ must not import modal (it runs on every runtime); "
                        "move Modal code to deploy.py",
                    )
                )
    return problems


def _settings_defaults(tree: ast.Module) -> dict[str, tuple[int, Any]] | None:
    """``{field: (line, default)}`` of the settings class, or None if it is missing."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == SETTINGS_CLASS:
            fields: dict[str, tuple[int, Any]] = {}
            for stmt in node.body:
                if isinstance(stmt, ast.FunctionDef) and any(
                    getattr(d, "id", "") == "property" for d in stmt.decorator_list
                ):  # derived from fields, e.g. experimental_options from gpu_snapshot
                    fields[stmt.name] = (stmt.lineno, None)
                if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                    continue
                value = stmt.value
                if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "Field":
                    value = value.args[0] if value.args else None
                try:
                    default = ast.literal_eval(value) if value is not None else None
                except ValueError:
                    default = None
                fields[stmt.target.id] = (stmt.lineno, default)
            return fields
    return None


def _check_defaults(fields: dict[str, tuple[int, Any]]) -> list[tuple[int, str]]:
    """What DeploySettings cannot know: the GPU types Modal offers, and the fields the
    declarations below rely on."""
    problems = []
    if "gpu" in fields:
        line, gpu = fields["gpu"]
        kind = str(gpu).split(":")[0].upper()
        if kind not in KNOWN_GPUS:
            problems.append(
                (line, f"gpu default {gpu!r} is not a Modal GPU type {sorted(KNOWN_GPUS)}")
            )
    for name in ("gpu", "volume", "timeout_s", "scaledown_window_s", "max_containers"):
        if name not in fields:
            problems.append((1, f"{SETTINGS_CLASS} has no field {name!r}"))
    return problems


def _settings_field(node: ast.expr) -> str | None:
    """``SETTINGS.x`` -> ``'x'``; anything else -> None."""
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == SETTINGS_NAME
    ):
        return node.attr
    return None


def _call_name(node: ast.expr) -> str:
    """``app.cls`` / ``modal.concurrent`` / ``x.y.z`` as a dotted string."""
    if isinstance(node, ast.Call):
        node = node.func
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _check_declarations(tree: ast.Module, fields: dict[str, Any]) -> list[tuple[int, str]]:
    problems: list[tuple[int, str]] = []
    volume_names = _volumes_from_settings(tree)
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    seen = {_call_name(call).rsplit(".", 1)[-1] for call in calls}
    for call in calls:
        name = _call_name(call)
        short = name.rsplit(".", 1)[-1]
        for keyword in call.keywords:
            if keyword.arg in DEPRECATED_KEYWORDS:
                problems.append(
                    (
                        keyword.value.lineno,
                        f"{keyword.arg}= is removed in modal 1.x; use "
                        f"{DEPRECATED_KEYWORDS[keyword.arg]}",
                    )
                )
        if short == "enter" and any(
            k.arg == "snap" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in call.keywords
        ):
            problems.append(
                (
                    call.lineno,
                    "@modal.enter(snap=True) fails to import when MODAL_MEMORY_SNAPSHOT=0; "
                    f"use snap={SETTINGS_NAME}.memory_snapshot",
                )
            )
        if short == "batched":
            problems.append(
                (
                    call.lineno,
                    "@modal.batched stacks a second batcher on the engine's; "
                    "use @modal.concurrent so inputs reach the engine",
                )
            )
        if name.endswith("Secret.from_name"):
            problems += _check_secret(call)
        if name.endswith("app.cls") and any(k.arg == "retries" for k in call.keywords):
            problems.append(
                (
                    call.lineno,
                    "retries= on the GPU class retries its web endpoint and spawned predictions "
                    "too (not idempotent); retry batch requests only, through "
                    f"Model.with_options(retries={SETTINGS_NAME}.batch_retry_policy)",
                )
            )
        if short not in ("cls", "function", "concurrent", "asgi_app", "with_options"):
            continue
        for keyword in call.keywords:
            allowed = RESOURCE_FIELDS.get(keyword.arg or "")
            if allowed is not None:
                used = _settings_field(keyword.value)
                if used not in allowed:
                    wanted = " or ".join(f"{SETTINGS_NAME}.{f}" for f in sorted(allowed))
                    problems.append(
                        (
                            keyword.value.lineno,
                            f"{keyword.arg}={ast.unparse(keyword.value)} "
                            f"bypasses the settings; use {wanted} so MODAL_* can override it",
                        )
                    )
                elif used not in fields:
                    problems.append(
                        (
                            keyword.value.lineno,
                            f"{SETTINGS_NAME}.{used} is not a field of {SETTINGS_CLASS}",
                        )
                    )
            elif keyword.arg == "volumes" and isinstance(keyword.value, ast.Dict):
                for value in keyword.value.values:
                    if not (isinstance(value, ast.Name) and value.id in volume_names):
                        problems.append(
                            (
                                value.lineno,
                                f"volume {ast.unparse(value)} is not modal.Volume.from_name("
                                f"{SETTINGS_NAME}.volume or .batch_volume, ...)",
                            )
                        )
        if name.endswith("app.cls"):
            declared = {k.arg for k in call.keywords}
            for keyword in REQUIRED_CLS_KEYWORDS:
                if keyword not in declared:
                    problems.append((call.lineno, f"@app.cls declares no {keyword}="))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value.attr if isinstance(node.value, ast.Attribute) else ""
        if node.attr == "lookup" and owner in REMOVED_LOOKUPS:
            replacement = REMOVED_LOOKUPS[owner]
        elif node.attr in DEPRECATED_ATTRIBUTES:
            replacement = DEPRECATED_ATTRIBUTES[node.attr]
        else:
            continue
        problems.append(
            (node.lineno, f"{ast.unparse(node)} is removed in modal 1.x; use {replacement}")
        )
    if "pip_install_from_pyproject" not in seen:
        problems.append((1, "the image must install from pyproject.toml (no hand-copied list)"))
    problems += _check_lock_used(tree, calls)
    if not any(
        _call_name(call).endswith("add_local_python_source")
        and any(isinstance(a, ast.Constant) and a.value == "inference" for a in call.args)
        for call in calls
    ):
        problems.append((1, 'the image must add_local_python_source("inference")'))
    if "concurrent" not in seen:
        problems.append((1, "no @modal.concurrent: the engine's batcher would see one input"))
    return problems


#: The image's package installs, each of which must take the lock's pins.
INSTALL_METHODS = ("pip_install", "pip_install_from_pyproject", "pip_install_from_requirements")


def _text(node: ast.expr | None, names: dict[str, ast.expr]) -> str:
    """A string expression as text, module-level names and f-string parts filled in."""
    if isinstance(node, ast.Name) and node.id in names:
        return _text(names[node.id], names)
    if isinstance(node, ast.Constant):
        return str(node.value)
    if isinstance(node, ast.JoinedStr):
        return "".join(
            _text(part.value if isinstance(part, ast.FormattedValue) else part, names)
            for part in node.values
        )
    return ast.unparse(node) if node is not None else ""


def _check_lock_used(tree: ast.Module, calls: list[ast.Call]) -> list[tuple[int, str]]:
    """The image copies requirements.lock in and every pip install passes it as ``-c``.

    Without it the image gets whatever resolves on build day, not the versions CI tested.
    """
    names = module_constants(tree)
    copied = [
        _text(call.args[1], names)
        for call in calls
        if _call_name(call).endswith("add_local_file")
        and len(call.args) == 2
        and LOCK in _text(call.args[0], names)
        and any(k.arg == "copy" and getattr(k.value, "value", None) is True for k in call.keywords)
    ]
    if not copied:
        message = (
            f"the image must copy {LOCK} in for pip to read: "
            f'.add_local_file(LOCK, "/opt/{LOCK}", copy=True) before the installs'
        )
        return [(1, message)]
    problems = []
    for call in calls:
        if _call_name(call).rsplit(".", 1)[-1] not in INSTALL_METHODS:
            continue
        options = next((k.value for k in call.keywords if k.arg == "extra_options"), None)
        words = _text(options, names).split()
        if not any(f"-c {dest}" in " ".join(words) for dest in copied):
            message = (
                f"{_call_name(call)} installs without the lock: pass "
                f'extra_options="-c {copied[0]}" so the image gets the versions CI tested'
            )
            problems.append((call.lineno, message))
    return problems


def _check_secret(call: ast.Call) -> list[tuple[int, str]]:
    """``Secret.from_name`` names its required keys, so Modal refuses a deploy whose secret
    lacks AUTH_TOKEN (with MODAL_AUTH=1) instead of serving without it."""
    keys = next((k.value for k in call.keywords if k.arg == "required_keys"), None)
    if keys is not None and _settings_field(keys) == "required_secret_keys":
        return []
    return [
        (
            call.lineno,
            "modal.Secret.from_name without required_keys="
            f"{SETTINGS_NAME}.required_secret_keys: a secret missing AUTH_TOKEN would deploy",
        )
    ]


def _volumes_from_settings(tree: ast.Module) -> set[str]:
    """Names bound to ``modal.Volume.from_name(SETTINGS.volume or .batch_volume, ...)``."""
    names = set()
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and _call_name(node.value).endswith("Volume.from_name")
            and node.value.args
            and _settings_field(node.value.args[0]) in VOLUME_FIELDS
        ):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names
