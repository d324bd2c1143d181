"""The Cog / Replicate contract: cog.yaml, its requirements and predict.py, checked together.

``cog build`` needs Docker and reports a bad cog.yaml only when it runs, and Replicate reports a
predictor it cannot parse only after a push, so the mistakes that cost a build are caught here,
offline: a key Cog does not know, an unquoted ``python_version`` (3.10 reads as 3.1), a torch
release with no wheel for the image's CUDA, a ``predict`` reference to a class that does not
exist, an ``Input(...)`` argument the build cannot resolve statically, concurrency that the
predictor cannot honour, and packages that disagree with pyproject.toml, the one dependency list.
Files are read as YAML, text and Python AST; nothing imports cog. The keys and types of cog.yaml
are validated by ``jsonschema``, requirement lines and versions are read by ``packaging`` (pip's
own parser), so only Cog's and this project's rules are written here.
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator
from packaging.version import InvalidVersion, Version

from tools.checks import Problem, module_constants, torch_compat
from tools.checks.cog_files import Pin, cog_requirements, load_cog_yaml, project_pins
from tools.checks.lock import LOCK, RELOCK, UNLOCKED, Lock, read_lock

# The keys and types of cog.yaml, for ``jsonschema``: the part of Cog's own JSON schema
# (replicate/cog, pkg/config/data/config_schema_v1.0.json, Draft 7, and the ``configFile``
# struct in pkg/config/config_file.go) that says which keys exist and what type each holds.
# Cog rejects unknown keys. That schema file ships with Cog's Go CLI, not with the ``cog``
# Python package (the SDK and its Rust server), so it could not be vendored from a wheel here;
# this subset was written from it. ``run`` is the newer name for ``predict`` (cog >= 0.17;
# both are accepted).
_STRINGS = {"type": ["array", "null"], "items": {"type": "string"}}
COG_YAML_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "build": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "gpu": {"type": "boolean"},
                "cuda": {"type": "string"},
                "cudnn": {"type": "string"},
                "python_version": {"type": ["string", "number"]},
                "sdk_version": {"type": "string"},
                "fast": {"type": "boolean"},
                "environment": _STRINGS,
                "python_requirements": {"type": "string"},
                "python_packages": _STRINGS,  # deprecated: python_requirements
                "system_packages": _STRINGS,
                "pre_install": _STRINGS,  # deprecated: run
                "run": {
                    "type": ["array", "null"],
                    "items": {
                        "anyOf": [
                            {"type": "string"},
                            {
                                "type": "object",
                                "required": ["command"],
                                "properties": {
                                    "command": {"type": "string"},
                                    "mounts": {"type": "array"},
                                },
                            },
                        ]
                    },
                },
            },
        },
        "image": {"type": "string"},
        "predict": {"type": "string"},
        "run": {"type": "string"},
        "train": {"type": "string"},
        "concurrency": {
            "type": "object",
            "additionalProperties": False,
            "required": ["max"],
            "properties": {
                "max": {"type": "integer"},
                "default_target": {"type": "integer"},
            },
        },
        "environment": _STRINGS,
        "weights": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["source"],
                "properties": {"source": {"type": "string"}, "target": {"type": "string"}},
            },
        },
    },
}

#: Cog's floors (pkg/config/config.go): Python 3.10, and 3.11 when concurrency.max > 1.
MIN_PYTHON = (3, 10)
MIN_PYTHON_FOR_CONCURRENCY = (3, 11)
#: torch releases with wheels for each CUDA (download.pytorch.org/whl/cuXYZ), as (first, last).
#: CUDA 11.8 ends at 2.7.1: torch 2.8 dropped it. CUDA 12.8 ends with 2.11 (no cu128 wheels
#: from 2.12 on), so 12.6 is the CUDA 12 line of torch 2.12-2.14; 2.15 drops 12.6 too. 13.0
#: (Turing to Blackwell) from 2.9 on. Source: the release compatibility matrix in RELEASE.md.
TORCH_BY_CUDA: dict[str, tuple[str, str]] = {
    "11.7": ("1.13.0", "2.0.1"),
    "11.8": ("2.0.0", "2.7.1"),
    "12.1": ("2.1.0", "2.5.1"),
    "12.4": ("2.4.0", "2.6.0"),
    "12.6": ("2.6.0", "2.14.1"),
    "12.8": ("2.7.0", "2.11.0"),
    "13.0": ("2.9.0", "2.14.1"),
}
_VALIDATOR = Draft7Validator(COG_YAML_SCHEMA)


def _dotted(path: Any) -> str:
    """jsonschema's path ``['build', 'run', 0]`` as ``build.run[0]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def schema_errors(data: Any) -> list[tuple[str, str]]:
    """(dotted path, message) for each way ``data`` breaks ``COG_YAML_SCHEMA``."""
    errors: list[tuple[str, str]] = []
    for error in _VALIDATOR.iter_errors(data):
        path = _dotted(error.absolute_path)
        where = path or "cog.yaml"
        if error.validator == "additionalProperties":
            known = error.schema.get("properties", {})
            for key in error.instance:
                if key not in known:
                    child = f"{path}.{key}" if path else str(key)
                    listed = ", ".join(sorted(known))
                    errors.append((child, f"{child} is not a key Cog knows (known here: {listed})"))
        elif error.validator == "type":
            types = error.validator_value
            names = [types] if isinstance(types, str) else types
            errors.append((where, f"{where} must be {' or '.join(names)}, got {error.instance!r}"))
        elif error.validator == "required":
            for key in error.validator_value:
                if key not in error.instance:
                    errors.append((where, f"{where} needs the key {key!r}"))
        else:
            errors.append((where, f"{where}: {error.message}"))
    return list(dict.fromkeys(errors))


def _version(text: str) -> Version:
    """A version without its local part (2.7.1+cu118 is the 2.7.1 release)."""
    return Version(Version(text).public)


#: The pyproject extras the Cog image must carry besides the core: real models. The Cog SDK is
#: not among them: ``cog build`` drops cog/coglet from the requirements and installs the SDK
#: that ``build.sdk_version`` names (the latest, without it).
COG_IMAGE_EXTRAS = ("diffusers",)
SDK_PACKAGES = ("cog", "coglet")


def _lock_disagreement(requirement: Pin, lock: Lock | None, specs: dict[str, Any]) -> str:
    """Why an exact pin of the Cog image is not requirements.lock's, or "" when it is.

    Cog's build copies the requirements file alone, so it cannot take the lock as constraints:
    ``make lock`` writes the image's whole closure here at the lock's versions instead. torch is
    the exception: the image's own CUDA 11.8 build, which the lock leaves out.
    """
    name = requirement.name
    if name == "torch":
        return ""
    if UNLOCKED.match(name):
        return (
            f"{name} comes with torch's CUDA build (torch pins it exactly); remove it here, "
            f"as `make lock` does"
        )
    if lock is None:
        if name in specs:
            return ""
        return (
            f"{name} is not in pyproject.toml; declare it there first (the one dependency "
            f"list), then pin it here"
        )
    locked = lock.version(name)
    if not locked and name not in specs:
        return (
            f"{name} is in neither pyproject.toml nor {LOCK}; declare it in pyproject.toml "
            f"(the one dependency list), then run `make lock`"
        )
    if not locked:
        return f"{LOCK} does not pin {name}; {RELOCK}"
    if requirement.pinned not in locked:
        return (
            f"{name}=={requirement.pinned} but {LOCK} pins {name}=={' or '.join(sorted(locked))}: "
            f"run `make lock`, which writes both files"
        )
    return ""


def _check_requirements(root: Path, build: dict[str, Any], where: Path) -> list[Problem]:
    problems: list[Problem] = []
    if isinstance(build.get("python_requirements"), str):
        req_path = root / build["python_requirements"]
        if not req_path.is_file():
            return [Problem(where, None, f"build.python_requirements: {req_path} does not exist")]
        where = req_path
    requirements = cog_requirements(root) or []
    for invalid in (r for r in requirements if r.requirement is None):
        message = f"{invalid.text!r} is not a requirement pip can read: {invalid.error}"
        problems.append(Problem(where, invalid.line, message))
    requirements = [r for r in requirements if r.requirement is not None]
    if not (root / "pyproject.toml").is_file():
        return problems
    specs, core, groups = project_pins(root)
    lock = read_lock(root)
    listed = {r.name for r in requirements}
    for requirement in requirements:
        if requirement.name in SDK_PACKAGES:
            problems.append(
                Problem(
                    where,
                    requirement.line,
                    f"cog build replaces {requirement.name} in the requirements with the latest "
                    f"SDK; remove it here and pin the SDK with build.sdk_version in cog.yaml",
                )
            )
            continue
        if requirement.pinned is None:
            problems.append(
                Problem(
                    where,
                    requirement.line,
                    f"{requirement.text!r} must be an exact pin (name==version) so the image is "
                    f"reproducible and Cog can pick the CUDA build of torch",
                )
            )
            continue
        message = _lock_disagreement(requirement, lock, specs)
        if message:
            problems.append(Problem(where, requirement.line, message))
        for declared in specs.get(requirement.name, []):
            if requirement.pinned not in declared.specifier:
                problems.append(
                    Problem(
                        where,
                        requirement.line,
                        f"{requirement.name}=={requirement.pinned} is outside pyproject.toml's "
                        f"'{declared.text}'; change one of them so they agree",
                    )
                )
    needed = core.union(*(groups.get(extra, set()) for extra in COG_IMAGE_EXTRAS))
    for name in sorted(needed - listed):
        problems.append(
            Problem(
                where,
                None,
                f"{name} is a dependency in pyproject.toml but the Cog image does not install "
                f"it; add {name}==<version> here",
            )
        )
    return problems


def _check_torch_cuda(build: dict[str, Any], root: Path, where: Path) -> list[Problem]:
    torch = next((r for r in cog_requirements(root) or [] if r.name == "torch"), None)
    if isinstance(build.get("python_requirements"), str):
        where = root / build["python_requirements"]
    if not build.get("gpu") or torch is None:
        return []
    if torch.pinned is None:
        return [Problem(where, torch.line, "with build.gpu, pin torch exactly (torch==X.Y.Z)")]
    cuda = str(build.get("cuda", ""))
    if not cuda:
        return []  # Cog picks a CUDA for the pinned torch itself
    key = ".".join(cuda.split(".")[:2])
    if key not in TORCH_BY_CUDA:
        return [
            Problem(
                where,
                torch.line,
                f"this check has no torch range for CUDA {cuda}; known: "
                f"{', '.join(TORCH_BY_CUDA)}; add it to TORCH_BY_CUDA in tools/checks/cog.py",
            )
        ]
    first, last = TORCH_BY_CUDA[key]
    try:
        supported = _version(first) <= _version(torch.pinned) <= _version(last)
    except InvalidVersion:
        return [Problem(where, torch.line, f"torch=={torch.pinned} is not a version")]
    if not supported:
        return [
            Problem(
                where,
                torch.line,
                f"torch=={torch.pinned} has no CUDA {cuda} build; CUDA {key} supports torch "
                f"{first} to {last} (use torch=={last}, or a newer build.cuda)",
            )
        ]
    return []


def _literal(node: ast.expr | None, constants: dict[str, ast.expr]) -> bool:
    if node is None:
        return True
    if isinstance(node, ast.Name) and node.id in constants:
        node = constants[node.id]
    try:
        ast.literal_eval(node)
    except ValueError:
        return False
    return True


def _string_literals(segment: str) -> int:
    """How many string tokens ``segment`` is made of (2+ for implicit concatenation)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(f"({segment})").readline))
    except (tokenize.TokenError, SyntaxError):
        return 0
    return sum(t.type == tokenize.STRING for t in tokens)


@dataclass
class _PredictorFacts:
    """What the cog.yaml checks need to know about the predictor class."""

    problems: list[Problem]
    concurrency: int | None = None  # @concurrent(max=...), when declared
    is_async: bool = False


def _check_predictor(root: Path, ref: str, where: Path, line: int | None) -> _PredictorFacts:
    """The predictor named by ``ref``, read as an AST the way cog build reads it."""
    module_file, sep, class_name = ref.partition(":")
    if not sep or not module_file.endswith(".py") or not class_name:
        message = f"predict must look like 'predict.py:Predictor', got {ref!r}"
        return _PredictorFacts([Problem(where, line, message)])
    path = root / module_file
    if not path.is_file():
        message = f"predict names {module_file}, which does not exist"
        return _PredictorFacts([Problem(where, line, message)])
    source = path.read_text(encoding="utf-8")
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return _PredictorFacts([Problem(path, exc.lineno, f"cannot parse: {exc.msg}")])
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    if class_name not in classes:
        message = (
            f"predict names class {class_name!r}, which {module_file} does not define at "
            f"module level (classes there: {', '.join(sorted(classes)) or 'none'})"
        )
        return _PredictorFacts([Problem(where, line, message)])
    constants = module_constants(tree)
    methods = {
        n.name: n
        for n in classes[class_name].body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    entry = [methods[name] for name in ("run", "predict") if name in methods]
    if len(entry) != 1:
        message = f"{class_name} must define exactly one of run() or predict()"
        return _PredictorFacts([Problem(path, classes[class_name].lineno, message)])
    method = entry[0]
    facts = _PredictorFacts([], is_async=isinstance(method, ast.AsyncFunctionDef))
    for default in [*method.args.defaults, *method.args.kw_defaults]:
        if not (isinstance(default, ast.Call) and getattr(default.func, "id", None) == "Input"):
            continue
        for keyword in default.keywords:
            if not _literal(keyword.value, constants):
                message = (
                    f"Input({keyword.arg}=...) must be a literal or a constant defined in "
                    f"{module_file}: cog build parses it statically and cannot resolve "
                    f"{ast.unparse(keyword.value)!r}"
                )
                facts.problems.append(Problem(path, keyword.value.lineno, message))
            elif (
                isinstance(keyword.value, ast.Constant)
                and isinstance(keyword.value.value, str)
                and _string_literals(ast.get_source_segment(source, keyword.value) or "") > 1
            ):
                message = (
                    f"Input({keyword.arg}=...) must be one string literal: cog build reads "
                    f"adjacent strings ('a' 'b') as raw source, quotes and newlines included"
                )
                facts.problems.append(Problem(path, keyword.value.lineno, message))
    for decorator in method.decorator_list:
        if isinstance(decorator, ast.Call) and ast.unparse(decorator.func).endswith("concurrent"):
            for keyword in decorator.keywords:
                value = constants.get(getattr(keyword.value, "id", ""), keyword.value)
                if keyword.arg == "max" and isinstance(value, ast.Constant):
                    facts.concurrency = int(value.value)
    return facts


def check(root: Path) -> list[Problem]:
    """Every problem with root/cog.yaml, its requirements, the predictor it names, and any
    torch API in inference/ newer than the image's torch (``torch_compat``)."""
    return _check_cog(root) + torch_compat.check(root)


def _build_node(node: yaml.Node, key: str) -> yaml.Node | None:
    """The node of ``build.<key>`` (its ``style`` tells whether the value was quoted)."""
    build = next((v for k, v in node.value if k.value == "build"), None)
    if not isinstance(build, yaml.MappingNode):
        return None
    return next((v for k, v in build.value if k.value == key), None)


def _check_sdk_version(
    root: Path, build: dict[str, Any], path: Path, line: int | None
) -> list[Problem]:
    """The image's Cog SDK must be the one the tests run against: pyproject's cog pin."""
    if not (root / "pyproject.toml").is_file():
        return []
    declared = project_pins(root)[0].get("cog", [])
    exact = [s.version for d in declared for s in d.specifier if s.operator == "=="]
    pinned = exact[0] if exact else None
    if pinned is None:
        return []
    version = build.get("sdk_version")
    if version is None:
        message = (
            f"build.sdk_version is unset, so cog build installs the latest SDK, not the "
            f'{pinned} the tests run; add sdk_version: "{pinned}"'
        )
        return [Problem(path, line, message)]
    if str(version) != pinned:
        message = f"build.sdk_version is {version} but pyproject.toml pins cog=={pinned}"
        return [Problem(path, line, message)]
    return []


def _check_python_version(
    build: dict[str, Any], node: yaml.Node, concurrency: int, path: Path, line: int | None
) -> list[Problem]:
    value = _build_node(node, "python_version")
    if value is None:
        return [Problem(path, line, 'build.python_version is required, e.g. "3.11"')]
    if not isinstance(value, yaml.ScalarNode) or value.style not in ('"', "'"):
        return [
            Problem(
                path,
                line,
                f'build.python_version must be quoted ("{getattr(value, "value", "")}"): YAML '
                f"reads an unquoted {getattr(value, 'value', '')} as a number (3.10 becomes 3.1)",
            )
        ]
    floor, why = MIN_PYTHON, ""
    if concurrency > 1:
        floor, why = MIN_PYTHON_FOR_CONCURRENCY, " with concurrency.max > 1"
    try:
        release = Version(str(build["python_version"])).release[:2]
    except InvalidVersion:
        message = f'build.python_version must be a version like "3.11", got {value.value!r}'
        return [Problem(path, line, message)]
    if release < floor:
        return [
            Problem(
                path,
                line,
                f"Cog needs Python >= {floor[0]}.{floor[1]}{why}, got {build['python_version']}",
            )
        ]
    return []


def _check_cog(root: Path) -> list[Problem]:
    loaded = load_cog_yaml(root)
    if isinstance(loaded, Problem):
        return [loaded]
    data, node, lines = loaded
    path = root / "cog.yaml"
    problems = [
        Problem(path, lines.get(where.split("[")[0]), message)
        for where, message in schema_errors(data)
    ]
    build = data.get("build")
    if not isinstance(build, dict):
        return [*problems, Problem(path, None, "cog.yaml needs a 'build' mapping")]
    concurrency = data.get("concurrency") if isinstance(data.get("concurrency"), dict) else {}
    concurrency_max = concurrency.get("max") if isinstance(concurrency.get("max"), int) else None
    problems += _check_python_version(
        build,
        node,
        concurrency_max or 1,
        path,
        lines.get("build.python_version", lines.get("build")),
    )
    if build.get("cuda") and not build.get("gpu"):
        message = "build.cuda has no effect without build.gpu: true"
        problems.append(Problem(path, lines.get("build.cuda"), message))
    if "python_packages" in build and "python_requirements" in build:
        message = "set only one of build.python_packages and build.python_requirements"
        problems.append(Problem(path, lines.get("build"), message))
    problems += _check_torch_cuda(build, root, path)
    problems += _check_requirements(root, build, path)
    problems += _check_sdk_version(root, build, path, lines.get("build.sdk_version"))

    ref_key = "run" if "run" in data else "predict"
    ref = data.get(ref_key)
    if not isinstance(ref, str):
        problems.append(Problem(path, None, 'cog.yaml needs predict: "predict.py:Predictor"'))
        return problems
    predictor = _check_predictor(root, ref, path, lines.get(ref_key))
    problems += predictor.problems
    line = lines.get("concurrency.max")
    if None not in (concurrency_max, predictor.concurrency) and (
        concurrency_max != predictor.concurrency
    ):
        message = (
            f"concurrency.max is {concurrency_max} but {ref} declares "
            f"@concurrent(max={predictor.concurrency}); make them equal"
        )
        problems.append(Problem(path, line, message))
    in_flight = max(concurrency_max or 1, predictor.concurrency or 1)
    if in_flight > 1 and not predictor.is_async and not predictor.problems:
        message = "concurrency > 1 needs an async predict()/run(); Cog refuses a sync one"
        problems.append(Problem(path, line, message))
    return problems
