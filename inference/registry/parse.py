"""The registry file: TOML, read into frozen specs with every problem reported at once.

TOML because it is in the standard library (``tomllib``: no dependency, no YAML's implicit
typing that turns ``version: 1.10`` into 1.1 or ``no`` into False), it has real numbers for
weights, comments for the reason behind a canary's 10%, and arrays of tables
(``[[models]]``, ``[[models.versions]]``) so that a duplicate name is ours to report with the
rest, not a parse error that hides every other problem.

Keys a version may set besides its backend are exactly the settings they override, named as
those settings are (``max_batch_size``, ``default_steps``, ...); each is validated by the same
settings group that validates its environment variable, against the deployment's settings, so
a version's ``default_steps`` above its ``max_steps`` fails as ``DEFAULT_STEPS`` would. A
version without a key inherits the deployment's setting, except ``revision`` and
``weights_path``, which belong to the version's backend and are never inherited from
``MODEL_REVISION`` and ``WEIGHTS_PATH``. Relative paths are relative to the registry file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from inference.registry.backends import classify
from inference.registry.pools import pool_options
from inference.registry.problems import RegistryError, did_you_mean, listed
from inference.registry.spec import ModelSpec, Version
from inference.registry.weights import weight_problems
from inference.settings import Settings
from inference.settings.engine import EngineSettings
from inference.settings.limits import LimitSettings

#: Model and version names: safe in a URL path, a metrics label and ``name@version``.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NAME_RULE = "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
#: The settings a version may override, by the group that validates them.
OVERRIDES: dict[str, type[BaseModel]] = {
    "max_batch_size": EngineSettings,
    "max_wait_ms": EngineSettings,
    **{
        name: LimitSettings
        for name in (
            "default_steps",
            "default_prompt_weight",
            "default_width",
            "default_height",
            "max_steps",
            "max_width",
            "max_height",
            "max_pixels",
        )
    },
}
TOP_KEYS = ("models",)
MODEL_KEYS = ("name", "description", "default", "versions")
VERSION_KEYS = ("name", "backend", "revision", "weights_path", "weight", "modal", *OVERRIDES)
#: Backends that read ``weights_path`` (the mock's gamma and beta, or your own class's file).
READS_WEIGHTS_PATH = ("mock", "class", "entry_point")


@dataclass(frozen=True)
class Parsed:
    """A registry file's models, and what a request that names no model gets: the default
    model by weight, or ``default_version`` of it when the file pins one."""

    models: tuple[ModelSpec, ...]
    default_model: str
    default_version: str | None


def read_registry(path: Path, base: Settings) -> Parsed:
    """The registry in TOML file ``path``, its versions' settings built on ``base``."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(
            [
                f"MODELS_FILE={path}: no such file; point MODELS_FILE at a registry file "
                "(examples/models.toml is one) or unset it to serve MODEL alone"
            ]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError([f"MODELS_FILE={path}: cannot read it as UTF-8 text ({exc})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError([f"{path}: not valid TOML: {exc}"]) from None
    return parse_registry(data, base, path.parent, str(path))


def parse_registry(data: Mapping[str, Any], base: Settings, base_dir: Path, where: str) -> Parsed:
    """The registry ``data`` describes, or ``RegistryError`` listing every problem in it."""
    problems = _unknown_keys(where, data, TOP_KEYS)
    raw_models = data.get("models")
    if not _tables(raw_models):
        problems.append(
            f"{where}: needs one or more [[models]] tables, each with a name and one or more "
            "[[models.versions]]"
        )
        raise RegistryError(problems)
    models: list[ModelSpec] = []
    names: list[str] = []
    defaults: list[tuple[str, str | None]] = []
    for number, raw in enumerate(raw_models, 1):
        name, model, default = _model(raw, number, base, base_dir, problems)
        if name is not None:
            names.append(name)
            if default is not False:
                defaults.append((name, default if isinstance(default, str) else None))
        if model is not None:
            models.append(model)
    problems += _duplicates(where, "model", names)
    problems += _default_problems(where, names, defaults)
    if problems:
        raise RegistryError(problems)
    default_model, default_version = defaults[0] if defaults else (models[0].name, None)
    return Parsed(tuple(models), default_model, default_version)


def _model(
    raw: Mapping[str, Any], number: int, base: Settings, base_dir: Path, problems: list[str]
) -> tuple[str | None, ModelSpec | None, bool | str]:
    """One [[models]] table: its name (None if not a valid one), its spec (None if it has a
    problem) and its ``default``; the name and default are judged even when a version fails."""
    start = len(problems)
    name = raw.get("name")
    where = f"model {name!r}" if isinstance(name, str) and name else f"model #{number}"
    problems += _unknown_keys(where, raw, MODEL_KEYS)
    valid_name = name if _check_name(where, name, problems) else None
    description = raw.get("description", "")
    if not isinstance(description, str):
        problems.append(f"{where}: description must be a string, got {description!r}")
    default = raw.get("default", False)
    if not isinstance(default, bool | str):
        problems.append(
            f"{where}: default must be true, false or the name of the version that serves "
            f"requests naming no model, got {default!r}"
        )
    raw_versions = raw.get("versions")
    if not _tables(raw_versions):
        problems.append(f"{where}: needs one or more [[models.versions]] tables")
        return valid_name, None, default
    versions = [
        _version(version, f"{where} version", index, name, base, base_dir, problems)
        for index, version in enumerate(raw_versions, 1)
    ]
    # Names and weights are judged from the tables, so a version with another problem still
    # counts as a duplicate, and its weight in the split.
    named = [v for v in raw_versions if isinstance(v.get("name"), str) and NAME.match(v["name"])]
    names = [version["name"] for version in named]
    problems += _duplicates(where, "version", names)
    weights = {v["name"]: v.get("weight", 1.0) for v in named if _is_number(v.get("weight", 1.0))}
    problems += weight_problems(where, weights, names)
    if isinstance(default, str) and default not in names:
        problems.append(
            f"{where}: default version {default!r} does not exist{did_you_mean(default, names)}; "
            f"its versions are {listed(names)}"
        )
    if len(problems) > start:
        return valid_name, None, default
    return valid_name, ModelSpec(name, tuple(v for v in versions if v), description), default


def _version(
    raw: Mapping[str, Any],
    label: str,
    number: int,
    model: str,
    base: Settings,
    base_dir: Path,
    problems: list[str],
) -> Version | None:
    """One [[models.versions]] table as a ``Version``, or None after adding its problems."""
    start = len(problems)
    name = raw.get("name")
    where = f"{label} {name!r}" if isinstance(name, str) and name else f"{label} #{number}"
    problems += _unknown_keys(where, raw, VERSION_KEYS)
    _check_name(where, name, problems)
    backend = raw.get("backend")
    kind = None
    if not isinstance(backend, str):
        problems.append(f"{where}: needs backend, a string as MODEL takes, e.g. backend = 'mock'")
    else:
        try:
            kind, backend = classify(backend, base_dir)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    revision = _optional_string(where, raw, "revision", problems)
    if revision is not None and kind not in (None, "hub"):
        problems.append(f"{where}: revision pins a hub id, but backend {backend!r} is a {kind}")
    weights_path = _optional_string(where, raw, "weights_path", problems)
    if weights_path is not None and kind not in (None, *READS_WEIGHTS_PATH):
        problems.append(
            f"{where}: weights_path is read by the mock and your own classes, but backend "
            f"{backend!r} is a {kind} that holds its own weights; remove weights_path"
        )
    path = (base_dir / Path(weights_path).expanduser()).resolve() if weights_path else None
    weight = raw.get("weight", 1.0)
    if not _is_number(weight):
        problems.append(f"{where}: weight must be a number, got {weight!r}")
    overrides = {key: raw[key] for key in OVERRIDES if key in raw}
    settings = _settings(where, base, overrides, backend, revision, path, problems)
    pool = pool_options(where, raw.get("modal"), problems)
    if len(problems) > start or kind is None or settings is None:
        return None
    return Version(model, name, backend, kind, revision, path, float(weight), settings, pool)


def _settings(
    where: str,
    base: Settings,
    overrides: dict[str, Any],
    backend: object,
    revision: str | None,
    weights_path: Path | None,
    problems: list[str],
) -> Settings | None:
    """``base`` with the version's backend and overrides, each checked by its settings group."""
    update: dict[str, Any] = {}
    for group in dict.fromkeys(OVERRIDES.values()):
        mine = {key: value for key, value in overrides.items() if OVERRIDES[key] is group}
        if not mine:
            continue
        current = {field: getattr(base, field) for field in group.model_fields}
        try:
            checked = group.model_validate({**current, **mine})
        except ValidationError as exc:
            for error in exc.errors():
                message = error["msg"].removeprefix("Value error, ")
                key = f"{error['loc'][0]} = {error.get('input')!r}: " if error["loc"] else ""
                problems.append(f"{where}: {key}{message}")
            continue
        update.update({key: getattr(checked, key) for key in mine})
    if not isinstance(backend, str):
        return None
    update.update(model=backend, model_revision=revision, weights_path=weights_path)
    return base.model_copy(update=update)


def _default_problems(
    where: str, models: Sequence[str], defaults: Sequence[tuple[str, str | None]]
) -> list[str]:
    """Exactly one model is the default; a registry of one model may leave it implied."""
    if len(defaults) > 1:
        return [
            f"{where}: models {listed(name for name, _ in defaults)} are all marked default; "
            "keep default on one"
        ]
    if not defaults and len(models) > 1:
        return [
            f"{where}: no model is the default for requests that name none; add default = true "
            f"to one of {listed(models)}"
        ]
    return []


def _unknown_keys(where: str, table: Mapping[str, Any], allowed: Sequence[str]) -> list[str]:
    known = listed(allowed)
    return [
        f"{where}: unknown key {key!r}{did_you_mean(key, allowed)}; known keys are {known}"
        for key in table
        if key not in allowed
    ]


def _check_name(where: str, name: object, problems: list[str]) -> bool:
    """Whether ``name`` is a valid name; if not, adds the problem."""
    if isinstance(name, str) and NAME.match(name):
        return True
    problems.append(f"{where}: name must be {NAME_RULE}, got {name!r}")
    return False


def _duplicates(where: str, what: str, names: Sequence[str]) -> list[str]:
    """Names used twice, compared without case: ``Draft`` and ``draft`` would be one in a URL
    to a human, so they may not name two things."""
    seen: dict[str, str] = {}
    problems = []
    for name in names:
        first = seen.get(name.casefold())
        seen.setdefault(name.casefold(), name)
        if first is not None:
            problems.append(
                f"{where}: {what} name {name!r} is used twice ({first!r}); give each {what} its "
                "own name"
            )
    return problems


def _optional_string(
    where: str, raw: Mapping[str, Any], key: str, problems: list[str]
) -> str | None:
    value = raw.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        problems.append(f"{where}: {key} must be a non-empty string, got {value!r}")
        return None
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _tables(value: object) -> bool:
    """Whether ``value`` is a non-empty array of tables."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
