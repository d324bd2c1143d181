"""Your own model class, served like the built-in ones: ``MODEL=package.module:ClassName``, or
the name of an entry point in the ``diffusion_serve.models`` group of an installed package.

The class is built with ``ClassName.from_settings(settings)`` when it defines that classmethod
(it then sees every setting: WEIGHTS_PATH, MODEL_REVISION, DEVICE, ...), else ``ClassName()``.
It is checked against the protocol of ``models.base`` before anything loads, so a class that
lacks a method, or whose method cannot be called the way the engine calls it, fails at start
with a message naming each problem, instead of failing the first request or the warm-up.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from inference.errors import ModelLoadError
from inference.models.base import Model
from inference.schema import Defaults
from inference.settings import Settings

ENTRY_POINT_GROUP = "diffusion_serve.models"
CLASS_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
#: method -> (the call the engine makes, the arguments it passes).
METHODS: dict[str, tuple[str, tuple[tuple[Any, ...], ...]]] = {
    "load": ("load()", ((),)),
    "check": ("check(job)", (("job",),)),
    "batch_key": ("batch_key(job)", (("job",),)),
    "generate": ("generate(jobs, progress=None)", (("jobs",), ("jobs", "progress"))),
}


def find_class(spec: str) -> type | None:
    """The class ``spec`` names (a class path or an entry point), or None if it names none."""
    if CLASS_PATH.match(spec) and not Path(spec).exists():
        module_name, _, qualname = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ModelLoadError(
                f"MODEL={spec}: cannot import {module_name!r} ({exc}); install the package that "
                "holds it, or put its folder on PYTHONPATH (README: Bring your own model)"
            ) from exc
        found: Any = module
        for part in qualname.split("."):
            found = getattr(found, part, None)
        if not inspect.isclass(found):
            raise ModelLoadError(f"MODEL={spec}: module {module_name!r} has no class {qualname!r}")
        return found
    if "/" in spec or Path(spec).exists():
        return None
    for entry in entry_points(group=ENTRY_POINT_GROUP, name=spec):
        try:
            found = entry.load()
        except Exception as exc:
            raise ModelLoadError(
                f"MODEL={spec}: entry point {entry.value!r} failed to load: {exc}"
            ) from exc
        if not inspect.isclass(found):
            raise ModelLoadError(f"MODEL={spec}: entry point {entry.value!r} is not a class")
        return found
    return None


def build_custom_model(cls: type, settings: Settings) -> Model:
    """An instance of ``cls`` built from ``settings``, checked against the model protocol."""
    name = f"{cls.__module__}:{cls.__qualname__}"
    factory: Callable[..., Any] | None = getattr(cls, "from_settings", None)
    try:
        model = factory(settings) if callable(factory) else cls()
    except ModelLoadError:
        raise
    except Exception as exc:
        how = f"{cls.__qualname__}.from_settings(settings)" if factory else f"{cls.__qualname__}()"
        raise ModelLoadError(f"{name}: {how} failed: {type(exc).__name__}: {exc}") from exc
    problems = protocol_problems(model)
    if problems:
        raise ModelLoadError(
            f"{name} does not implement the model protocol (inference/models/base.py): "
            + "; ".join(problems)
        )
    return model


def protocol_problems(model: Any) -> list[str]:
    """What ``model`` lacks of the protocol, one sentence each; empty if nothing."""
    problems = []
    name = getattr(model, "name", None)
    if not isinstance(name, str) or not name:
        problems.append(f"attribute 'name' must be a non-empty str, got {_shown(name)}")
    multiple = getattr(model, "size_multiple", None)
    if not isinstance(multiple, int) or isinstance(multiple, bool) or multiple < 8:
        problems.append(f"attribute 'size_multiple' must be an int >= 8, got {_shown(multiple)}")
    try:
        defaults = model.defaults
    except AttributeError:
        problems.append("property 'defaults' (a Defaults of steps, prompt_weight, width, height)")
    except Exception as exc:
        problems.append(f"property 'defaults' raised {type(exc).__name__}: {exc}")
    else:
        if not isinstance(defaults, Defaults):
            got = _shown(defaults)
            problems.append(f"'defaults' must be an inference.schema.Defaults, got {got}")
    for method, (call, argument_lists) in METHODS.items():
        function = getattr(model, method, None)
        if not callable(function):
            problems.append(f"missing method {call}")
            continue
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            continue  # a builtin or C callable: nothing to check
        for arguments in argument_lists:
            try:
                signature.bind(*arguments)
            except TypeError:
                problems.append(
                    f"{method}{signature} cannot be called as the engine calls it: {call}"
                )
                break
    return problems


def _shown(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"[:80]
