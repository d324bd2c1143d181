"""The Hugging Face Docker Space contract: README front matter and Dockerfile, checked together.

The Hub validates the front matter only after a push, and hadolint knows nothing about Spaces,
so the mistakes that cost a build-and-wait cycle are caught here, offline: a colour the Hub
rejects, a description it truncates, a container that binds the wrong port or host, runs as
root instead of uid 1000, or bakes a token into an image layer. Files are read as text and
YAML; nothing is imported from the app.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tools.checks import Problem

#: The Hub rejects any other colorFrom/colorTo.
ALLOWED_COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")
#: ``huggingface_hub.SpaceHardware`` values (a test keeps them in step with the library).
HARDWARE = (
    "cpu-basic",
    "cpu-upgrade",
    "t4-small",
    "t4-medium",
    "l4x1",
    "l4x4",
    "l40sx1",
    "l40sx4",
    "l40sx8",
    "a10g-small",
    "a10g-large",
    "a10g-largex2",
    "a10g-largex4",
    "a100-large",
    "a100x4",
    "a100x8",
)
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
    lines = readme.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].strip() != "---":
        return Problem(
            readme,
            1,
            "no front matter: a Space README must start with a '---' line, the Space's YAML "
            "settings (sdk: docker, app_port, ...) and a closing '---'",
        )
    try:
        end = next(i for i, line in enumerate(lines[1:], 1) if line.strip() == "---")
    except StopIteration:
        return Problem(readme, 1, "the front matter has no closing '---' line")
    text = "\n".join(lines[1:end])
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark is not None else 1
        return Problem(readme, line, f"the front matter is not valid YAML: {exc}")
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        return Problem(readme, 2, "the front matter must be a YAML mapping of key: value lines")
    key_lines = {k.value: k.start_mark.line + 2 for k, _ in node.value}
    return data, key_lines


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


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction with its continuation lines joined."""

    line: int
    keyword: str
    args: str

    def words(self) -> list[str]:
        """Exec-form JSON arrays as their items, shell form split like a shell would."""
        text = self.args.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError:
                pass
            else:
                if isinstance(items, list) and all(isinstance(i, str) for i in items):
                    return items
        try:
            return shlex.split(text, comments=False)
        except ValueError:
            return text.split()


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order. Handles ``\\`` continuations, comments and blank lines.

    Heredoc bodies (``RUN <<EOF``) are skipped: their lines are not instructions.
    """
    instructions: list[Instruction] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        raw = lines[i].strip()
        start = i + 1
        i += 1
        if not raw or raw.startswith("#"):
            continue
        parts = [raw]
        while parts[-1].endswith("\\") and i < len(lines):
            parts[-1] = parts[-1][:-1]
            nxt = lines[i].strip()
            i += 1
            if nxt.startswith("#"):
                parts.append("\\")  # a comment inside a continuation keeps it going
                continue
            parts.append(nxt)
        joined = " ".join(p for p in parts if p != "\\").strip()
        keyword, _, args = joined.partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip()))
        heredoc = re.search(r"<<-?[\"']?(\w+)[\"']?", args) if keyword.upper() == "RUN" else None
        if heredoc:
            while i < len(lines) and lines[i].strip() != heredoc.group(1):
                i += 1
            i += 1
    return instructions


def _env_pairs(inst: Instruction) -> list[tuple[str, str]]:
    """``ENV A=1 B=2`` / ``ENV A 1`` / ``ARG A=1`` as (name, value) pairs."""
    words = inst.words()
    if inst.keyword == "ENV" and len(words) >= 2 and "=" not in words[0]:
        return [(words[0], " ".join(words[1:]))]
    return [(w.partition("=")[0], w.partition("=")[2]) for w in words]


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


def _command_words(inst: Instruction) -> list[str]:
    words = inst.words()
    # ["sh", "-c", "python -m ..."]: look inside the shell string too.
    if len(words) >= 3 and words[0] in ("sh", "/bin/sh", "bash", "/bin/bash") and words[1] == "-c":
        return shlex.split(words[2])
    return words


def _final_stage(instructions: list[Instruction]) -> list[Instruction]:
    starts = [j for j, inst in enumerate(instructions) if inst.keyword == "FROM"]
    return instructions[starts[-1] :] if starts else instructions


def check_dockerfile(root: Path, app_port: int | None) -> list[Problem]:
    """Problems in the Dockerfile against the Space contract and the front matter's app_port."""
    path = root / "Dockerfile"
    if not path.is_file():
        return [Problem(path, None, "no Dockerfile: a Docker Space builds its image from it")]
    instructions = parse_dockerfile(path.read_text(encoding="utf-8"))
    problems: list[Problem] = []
    last_line = instructions[-1].line if instructions else 1

    for inst in instructions:
        if inst.keyword not in ("ENV", "ARG"):
            continue
        for name, _ in _env_pairs(inst):
            if looks_secret(name):
                problems.append(
                    Problem(
                        path,
                        inst.line,
                        f"{inst.keyword} {name} looks like a secret: {inst.keyword} values are "
                        "stored in the image for anyone who pulls it; set it as a Space secret "
                        "(read at run time) and at build time use "
                        f"RUN --mount=type=secret,id={name}",
                    )
                )

    stage = _final_stage(instructions)
    env: dict[str, str] = {}
    env_lines: dict[str, int] = {}
    users_by_uid: dict[str, str] = {}
    user: Instruction | None = None
    exposed: list[tuple[int, str]] = []
    cmd: Instruction | None = None
    for inst in stage:
        if inst.keyword == "ENV":
            for name, value in _env_pairs(inst):
                env[name] = _expand(value, env)
                env_lines[name] = inst.line
        elif inst.keyword == "RUN":
            for match in re.finditer(r"useradd\b([^;&|]*)", inst.args):
                words = match.group(1).split()
                uid = _flag(words, "-u") or _flag(words, "--uid")
                names = [w for w in words if not w.startswith("-")]
                if uid and names:
                    users_by_uid.setdefault(names[-1], uid)
        elif inst.keyword == "USER":
            user = inst
        elif inst.keyword == "EXPOSE":
            exposed += [(inst.line, w.split("/")[0]) for w in inst.words()]
        elif inst.keyword in ("CMD", "ENTRYPOINT"):
            cmd = inst

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
        name = user.words()[0].split(":")[0] if user.words() else ""
        uid = name if name.isdigit() else users_by_uid.get(name)
        if uid != str(SPACE_UID):
            problems.append(
                Problem(
                    path,
                    user.line,
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
                    user.line,
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
    words = [_expand(w, env) for w in _command_words(cmd)]
    port = _flag(words, "--port") or env.get("PORT") or str(DEFAULT_PORT)
    host = _flag(words, "--host") or env.get("HOST") or DEFAULT_HOST
    if app_port is not None and port != str(app_port):
        problems.append(
            Problem(
                path,
                cmd.line,
                f"{cmd.keyword} serves on port {port}, but the front matter's app_port is "
                f"{app_port}; the Space sends traffic only to app_port",
            )
        )
    if host != "0.0.0.0":
        problems.append(
            Problem(
                path,
                cmd.line,
                f"{cmd.keyword} binds host {host}, which the Space's proxy cannot reach; "
                "pass --host 0.0.0.0",
            )
        )
    return problems


def check(root: Path) -> list[Problem]:
    """Every Space problem in ``root``: the front matter, then the Dockerfile."""
    problems, app_port = check_front_matter(root)
    return problems + check_dockerfile(root, app_port)
