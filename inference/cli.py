"""Command line: python -m inference serve | predict | batch | bench | check | download.

Each command builds its settings from flags over env vars (flags win), so the CLI, the server and
the runtimes all share one configuration path.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from inference import schema
from inference.errors import InferenceError
from inference.logs import configure_logging
from inference.settings import Settings, describe_settings_errors

#: Modules that add a subcommand through ``register(subparsers)``; each sets ``run`` on its
#: parser and imports its heavy dependencies inside ``run`` so ``--help`` stays fast.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "inference.batch",
    "inference.weights",
)


def _settings(**fields: Any) -> Settings:
    overrides = {k: v for k, v in fields.items() if v is not None}
    return Settings(**overrides)


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="'mock' (default), a diffusers folder or a hub id")
    parser.add_argument("--weights-path", type=Path, help="mock weights (JSON or safetensors)")


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from inference.app import create_app

    settings = _settings(
        model=args.model,
        weights_path=args.weights_path,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
    )
    return 0


FORMAT_BY_SUFFIX = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


def _output_format(output: Path, requested: str | None) -> str:
    """The image format from --format and -o's suffix, which must agree when both are given."""
    suffix = output.suffix.lower()
    if suffix and suffix not in FORMAT_BY_SUFFIX:
        raise SystemExit(
            f"error: -o {output}: {suffix} is not an image type this writes; use .png, .jpg or "
            ".webp (or no suffix with --format)"
        )
    implied = FORMAT_BY_SUFFIX.get(suffix)
    if requested and implied and requested != implied:
        raise SystemExit(f"error: --format {requested} but -o {output} is {implied}; pick one")
    return requested or implied or "png"


def _output_paths(output: Path, count: int, fmt: str) -> list[Path]:
    if output.is_dir():  # -o out/ : files inside it
        output = output / "out"
    suffix = output.suffix or f".{'jpg' if fmt == 'jpeg' else fmt}"
    if count == 1:
        return [output.with_suffix(suffix)]
    return [output.with_name(f"{output.stem}-{i}{suffix}") for i in range(count)]


def _predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from inference.engine import Engine

    fmt = _output_format(args.output, args.format)
    request = schema.GenerateRequest(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        seed=args.seed,
        prompt_weight=args.prompt_weight,
        steps=args.steps,
        width=args.width,
        height=args.height,
        num_outputs=args.num_outputs,
        output_format=fmt,
    )
    settings = _settings(model=args.model, weights_path=args.weights_path)
    engine = Engine.from_settings(settings).start()
    try:
        job = engine.resolve(request)
        with tqdm(
            total=job.steps, desc=f"{job.num_outputs} image(s)", unit="step", disable=args.quiet
        ) as bar:
            engine.add_step_listener(lambda step, total: bar.update(1))
            result = engine.generate(request.model_copy(update={"seed": job.seeds[0]}))
    finally:
        engine.stop()
    paths = _output_paths(args.output, len(result.images), fmt)
    for path, image in zip(paths, result.images, strict=True):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(image.data)
        except OSError as exc:
            raise SystemExit(f"error: cannot write {path}: {exc.strerror or exc}") from None
        sys.stdout.write(f"{path}  seed={image.seed}  {image.width}x{image.height}\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m inference", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the HTTP API (default port 8000)")
    _add_model_flags(serve)
    serve.add_argument("--host", help="bind address (default 127.0.0.1; 0.0.0.0 in containers)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(run=_serve)

    predict = commands.add_parser("predict", help="generate images in-process and write them")
    _add_model_flags(predict)
    predict.add_argument("--prompt", default="", help="what to draw")
    predict.add_argument("--negative-prompt", default="", help="what to steer away from")
    predict.add_argument("--seed", type=int, help="0..2^32-1; random when omitted (printed)")
    predict.add_argument(
        "--prompt-weight", type=float, help="guidance strength 0..30 (default: the model's)"
    )
    predict.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    predict.add_argument("--width", type=int, help="pixels, a multiple of 8 (default: model's)")
    predict.add_argument("--height", type=int, help="pixels, a multiple of 8 (default: model's)")
    predict.add_argument("--num-outputs", type=int, default=1, help="images, 1..4 (default 1)")
    predict.add_argument("--format", choices=["png", "jpeg", "webp"], help="default: from -o")
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
    except ValidationError as exc:
        if exc.title == Settings.__name__:
            messages = describe_settings_errors(exc)
        else:
            messages = [error["message"] for error in schema.describe_errors(exc.errors())]
        for message in messages:
            sys.stderr.write(f"error: {message}\n")
        return 2
    except InferenceError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        return 1
