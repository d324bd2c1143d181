"""Command line: python -m inference serve | predict | batch | download.

Each command builds its settings from flags over env vars (flags win), so the CLI, the server and
the runtimes all share one configuration path. ``predict``'s request flags are derived from the
request schema (``inference.fields``): a new request field is a new flag without an edit here.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from inference import codec
from inference.errors import InferenceError, InvalidRequest
from inference.fields import request_fields
from inference.logs import configure_logging
from inference.settings import Settings, describe_settings_errors

#: What ``--help`` shows: written for the person typing the command, not for this file's reader.
DESCRIPTION = """\
Serve text-to-image models over HTTP (with a web UI), or generate images from the command line.
Server settings can also come from environment variables (--port or PORT, --model or MODEL);
a flag wins over its variable."""
EPILOG = """\
examples:
  python -m inference serve                      API, docs and UI on http://127.0.0.1:8000
  python -m inference serve --port 8080 --model stabilityai/sd-turbo
  python -m inference predict --prompt "a red fox in the snow" -o fox.png
  python -m inference predict --models-file examples/models.toml --model draft@v2 --prompt "a fox"
  python -m inference batch prompts.txt --output-dir out/

python -m inference COMMAND --help shows a command's own flags."""
#: Modules that add a subcommand through ``register(subparsers)``; each sets ``run`` on its
#: parser and imports its heavy dependencies inside ``run`` so ``--help`` stays fast.
SUBCOMMAND_MODULES: tuple[str, ...] = ("inference.jobs.command", "inference.weights")
#: Extra spellings of request flags: ``--format`` is what people type for ``--output-format``,
#: ``--prompt-strength`` is Replicate's name for ``--strength``, ``--lora`` one of ``loras``.
FLAG_ALIASES = {
    "output_format": ("--format",),
    "strength": ("--prompt-strength",),
    "loras": ("--lora",),
}


def settings_from(**fields: Any) -> Settings:
    """Settings from env vars, with the flags that were given on top."""
    return Settings(**{k: v for k, v in fields.items() if v is not None})


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        metavar="MODEL",
        help="'mock' (default), a diffusers folder or a hub id; with a registry (--models-file "
        "or MODELS_FILE), one of its models: NAME, or NAME@VERSION to pin a version",
    )
    parser.add_argument("--weights-path", type=Path, help="mock weights (JSON or safetensors)")
    parser.add_argument(
        "--models-file",
        type=Path,
        metavar="PATH",
        help="a registry of models and versions (TOML, e.g. examples/models.toml; MODELS_FILE)",
    )


def model_settings(args: argparse.Namespace) -> tuple[Settings, str | None]:
    """The settings ``add_model_flags``' flags describe, and the registry model ``--model``
    chooses: with a registry, ``--model`` names one of its models (a name the registry's
    router checks, listing its names when unknown); without one it is ``MODEL``, as ever."""
    settings = settings_from(models_file=args.models_file, weights_path=args.weights_path)
    if settings.models_file is None:
        return settings_from(model=args.model, weights_path=args.weights_path), None
    return settings, args.model


def _serve(args: argparse.Namespace) -> int:
    from inference.http.server import serve

    settings = settings_from(
        model=args.model,
        weights_path=args.weights_path,
        models_file=args.models_file,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        trusted_proxies=args.trusted_proxies,
    )
    serve(settings)
    return 0


def _output_format(output: Path, requested: str | None) -> str:
    """The image format from --format and -o's suffix, which must agree when both are given."""
    suffix = output.suffix.lower()
    if suffix and suffix not in codec.BY_SUFFIX:
        raise SystemExit(
            f"error: -o {output}: {suffix} is not an image type this writes; use "
            f"{', '.join(sorted(codec.BY_SUFFIX))} (or no suffix with --format)"
        )
    implied = codec.BY_SUFFIX[suffix].name if suffix else None
    if requested and implied and requested != implied:
        raise SystemExit(f"error: --format {requested} but -o {output} is {implied}; pick one")
    return requested or implied or "png"


def _output_paths(output: Path, count: int, fmt: str) -> list[Path]:
    if output.is_dir():  # -o out/ : files inside it
        output = output / "out"
    suffix = output.suffix or codec.FORMATS[fmt].suffix
    if count == 1:
        return [output.with_suffix(suffix)]
    return [output.with_name(f"{output.stem}-{i}{suffix}") for i in range(count)]


def _predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from inference.registry import Registry
    from inference.service import Service

    request = {f.name: getattr(args, f.name) for f in request_fields()}
    request = {name: value for name, value in request.items() if value is not None}
    request["output_format"] = _output_format(args.output, args.output_format)
    settings, choice = model_settings(args)
    # The version is chosen (an unknown name refused) before any weights load.
    registry = Registry.from_settings(settings)
    ref = registry.route(choice)
    service = Service.from_settings(registry.version(ref).settings)
    service.start()
    try:
        job = service.job(request)
        # From an image, only the last steps x strength steps run (as in diffusers).
        steps = job.steps if job.strength is None else max(1, int(job.steps * job.strength))
        with tqdm(
            total=steps, desc=f"{job.num_outputs} image(s)", unit="step", disable=args.quiet
        ) as bar:
            service.engine.add_step_listener(lambda step, total: bar.update(1))
            result = service.generate(job)
    finally:
        service.stop()
    paths = _output_paths(args.output, len(result.images), job.output_format)
    for path, image in zip(paths, result.images, strict=True):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(image.data)
        except OSError as exc:
            raise SystemExit(f"error: cannot write {path}: {exc.strerror or exc}") from None
        flagged = "  nsfw: flagged by the safety checker" if image.nsfw else ""
        version = "" if registry.implicit else f"  version={ref}"
        line = f"{path}  seed={image.seed}  {image.width}x{image.height}{version}{flagged}"
        sys.stdout.write(line + "\n")
    return 0


def _file_bytes(path: str) -> bytes:
    """An image flag's file, read (the service decodes and checks it)."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc.strerror or exc}") from None


def _add_request_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per request field; an omitted flag leaves the field to the model's default.
    An image field's flag takes a file path; a list field's flag repeats, one item in its
    text form each (``--lora REF[:SCALE]``).
    """
    for field in request_fields():
        if field.type is list:
            parser.add_argument(
                field.flag,
                *FLAG_ALIASES.get(field.name, ()),
                dest=field.name,
                action="append",
                type=field.item_from_text,
                metavar=field.item_form,
                help=field.description.replace("%", "%%") + " Repeat for several.",
            )
            continue
        parser.add_argument(
            field.flag,
            *FLAG_ALIASES.get(field.name, ()),
            dest=field.name,
            type=_file_bytes if field.type is bytes else field.type,
            metavar="PATH" if field.type is bytes else None,
            choices=field.choices or None,
            help=field.description.replace("%", "%%"),
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m inference",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="serve the HTTP API, its docs and the web UI (default port 8000)"
    )
    add_model_flags(serve)
    serve.add_argument("--host", help="bind address (default 127.0.0.1; 0.0.0.0 in containers)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--trusted-proxies",
        metavar="ADDRESSES",
        help="comma-separated addresses or CIDR networks whose X-Forwarded-For names the client "
        "(TRUSTED_PROXIES; default none: the peer address is the client)",
    )
    serve.set_defaults(run=_serve)

    predict = commands.add_parser("predict", help="generate images in-process and write them")
    add_model_flags(predict)
    _add_request_flags(predict)
    predict.add_argument(
        "-o", "--output", type=Path, default=Path("out.png"), help="file (out-N.ext for several)"
    )
    predict.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    predict.set_defaults(run=_predict)

    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        configure_logging(getattr(args, "log_level", None) or Settings().log_level)
        return int(args.run(args))
    except ValidationError as exc:  # only settings are validated outside the service
        for message in describe_settings_errors(exc):
            sys.stderr.write(f"error: {message}\n")
        return 2
    except InvalidRequest as exc:
        for error in exc.errors:
            sys.stderr.write(f"error: {error['message']}\n")
        return 2
    except InferenceError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        return 1
