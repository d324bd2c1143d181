"""The optional Gradio UI at /ui: a page for people, served by the same engine as the JSON API.

It calls ``engine.submit`` directly, so a click in the browser and a ``POST /predict`` share one
batcher, one queue bound, one set of limits and one set of metrics, and the same request gives
the same PNG bytes through either door (a test compares them). Gradio is an optional extra
(``pip install 'diffusion-serve[ui]'``) that adds ~270 MB and seconds of import time, so it is
imported only here, only when the app mounts the UI; without it /ui says how to enable it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from inference.errors import InferenceError
from inference.schema import (
    NUM_OUTPUTS_MAX,
    PROMPT_MAX_CHARS,
    PROMPT_WEIGHT_MAX,
    PROMPT_WEIGHT_MIN,
    SEED_MAX,
    SIDE_MIN,
    SIDE_MULTIPLE,
    GenerateRequest,
    GenerateResult,
    describe_errors,
)

if TYPE_CHECKING:
    import gradio as gr

    from inference.engine import Engine
    from inference.settings import Settings

log = logging.getLogger(__name__)

UI_PATH = "/ui"
INSTALL_HINT = (
    "the web UI needs the optional 'ui' extra: pip install 'diffusion-serve[ui]' "
    "(from a checkout: pip install -e '.[ui]'), then restart the server"
)
#: Generated images stay in Gradio's cache this long (seconds) before it deletes them.
CACHE_MAX_AGE_S = 3600
EXAMPLES = [
    ["a red fox in the snow, watercolor", "", 42, False],
    ["a lighthouse at dusk, oil painting", "fog", 7, False],
    ["an isometric city made of glass", "people", 1234, False],
]


def gradio_available() -> bool:
    """True when the ``ui`` extra is installed (checked without importing gradio)."""
    return importlib.util.find_spec("gradio") is not None


def _describe(result: GenerateResult) -> str:
    t = result.timings
    images = "image" if result.batch_size == 1 else "images"
    return (
        f"Seed **{result.seed}** · model `{result.model}` · "
        f"batch of {result.batch_size} {images}  \n"
        f"queue {t.queue_ms:.0f} ms · inference {t.inference_ms:.0f} ms · "
        f"encode {t.encode_ms:.0f} ms · total {t.total_ms:.0f} ms"
    )


def _cache_png(cache_dir: str, data: bytes, name: str) -> str:
    """Write the engine's PNG bytes into Gradio's cache and return the path.

    A path already inside the cache is served as is, so the browser and ``gradio_client`` get
    exactly the engine's bytes (an array or PIL image would be re-encoded by Gradio), and
    Gradio's ``delete_cache`` sweep removes the file later.
    """
    folder = Path(cache_dir) / hashlib.sha256(data).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if not path.exists():
        path.write_bytes(data)
    return str(path)


def build_ui(engine: Engine) -> gr.Blocks:
    """The Blocks page; its controls are bounded by the engine's own defaults and limits."""
    import gradio as gr

    defaults, limits = engine.defaults, engine.limits

    async def generate(
        prompt: str,
        negative_prompt: str,
        seed: float | None,
        randomize_seed: bool,
        prompt_weight: float,
        steps: float,
        width: float,
        height: float,
        num_outputs: float,
    ) -> tuple[list[str], int, str]:
        try:
            request = GenerateRequest(
                prompt=prompt or "",
                negative_prompt=negative_prompt or "",
                seed=None if randomize_seed or seed is None else int(seed),
                prompt_weight=float(prompt_weight),
                steps=int(steps),
                width=int(width),
                height=int(height),
                num_outputs=int(num_outputs),
                output_format="png",
            )
        except ValidationError as exc:
            message = "; ".join(e["message"] for e in describe_errors(exc.errors()))
            raise gr.Error(message, print_exception=False) from None  # the user's typo
        try:
            result = await engine.submit(request)
        except InferenceError as exc:
            raise gr.Error(exc.message, print_exception=False) from None
        paths = [
            _cache_png(gallery.GRADIO_CACHE, image.data, f"seed-{image.seed}.png")
            for image in result.images
        ]
        return paths, result.seed, _describe(result)

    with gr.Blocks(
        title="diffusion-serve",
        analytics_enabled=False,
        delete_cache=(CACHE_MAX_AGE_S, CACHE_MAX_AGE_S),
    ) as demo:
        gr.Markdown(
            f"## diffusion-serve · `{engine.model.name}`\n"
            "Text-to-image through the same engine as the JSON API "
            "([`POST /predict`](../docs)): requests from here and from the API share one "
            "batcher, one queue and the same limits."
        )
        with gr.Row():
            with gr.Column(scale=2):
                prompt = gr.Textbox(
                    label="Prompt",
                    lines=2,
                    max_length=PROMPT_MAX_CHARS,
                    placeholder="a red fox in the snow, watercolor",
                    elem_id="prompt",
                )
                negative_prompt = gr.Textbox(
                    label="Negative prompt", max_length=PROMPT_MAX_CHARS, elem_id="negative-prompt"
                )
                with gr.Row():
                    seed = gr.Number(
                        label="Seed", value=42, precision=0, minimum=0, maximum=SEED_MAX
                    )
                    randomize = gr.Checkbox(label="Randomize seed", value=True)
                prompt_weight = gr.Slider(
                    PROMPT_WEIGHT_MIN,
                    PROMPT_WEIGHT_MAX,
                    value=defaults.prompt_weight,
                    step=0.1,
                    label="Prompt weight (guidance)",
                )
                steps = gr.Slider(1, limits.max_steps, value=defaults.steps, step=1, label="Steps")
                with gr.Row():
                    width = gr.Slider(
                        SIDE_MIN,
                        limits.max_width,
                        value=defaults.width,
                        step=SIDE_MULTIPLE,
                        label="Width",
                    )
                    height = gr.Slider(
                        SIDE_MIN,
                        limits.max_height,
                        value=defaults.height,
                        step=SIDE_MULTIPLE,
                        label="Height",
                    )
                most = min(NUM_OUTPUTS_MAX, engine.max_batch_size)  # MAX_BATCH_SIZE caps it
                num_outputs = gr.Slider(1, most, value=1, step=1, label="Number of images")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=3):
                gallery = gr.Gallery(
                    label="Images (PNG)",
                    format="png",
                    columns=2,
                    fit_columns=False,
                    object_fit="contain",
                    preview=False,
                    elem_id="gallery",
                )
                seed_used = gr.Number(value=None, label="Seed used", precision=0, interactive=False)
                timings = gr.Markdown(elem_id="timings")
        gr.Examples(EXAMPLES, inputs=[prompt, negative_prompt, seed, randomize])
        inputs = [
            prompt,
            negative_prompt,
            seed,
            randomize,
            prompt_weight,
            steps,
            width,
            height,
            num_outputs,
        ]
        outputs = [gallery, seed_used, timings]
        # No Gradio-side concurrency cap: the engine's bounded queue is the one back-pressure.
        button.click(generate, inputs, outputs, api_name="generate", concurrency_limit=None)
        prompt.submit(generate, inputs, outputs, api_visibility="private", concurrency_limit=None)
    return demo


def _mount_notice(app: FastAPI, path: str, message: str) -> None:
    """Answer /ui and below with 501 and ``message``, so a visitor learns how to get the UI."""

    async def ui_unavailable(rest: str = "") -> JSONResponse:
        return JSONResponse({"error": {"type": "ui_unavailable", "message": message}}, 501)

    app.add_api_route(path, ui_unavailable, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        path + "/{rest:path}", ui_unavailable, methods=["GET"], include_in_schema=False
    )


def mount_ui(app: FastAPI, engine: Engine, settings: Settings, path: str = UI_PATH) -> bool:
    """Mount the UI at ``path``; without gradio, mount a page saying how to enable it.

    With AUTH_TOKEN set, the UI asks for a login (any user name, the token as password), so
    it is no back door around the API's bearer token. Returns whether the UI was mounted.
    """
    if not settings.ui:
        _mount_notice(app, path, "the web UI is turned off on this server (UI=false); set UI=true")
        return False
    if not gradio_available():
        log.info("the web UI is off: %s", INSTALL_HINT)
        _mount_notice(app, path, INSTALL_HINT)
        return False

    import gradio as gr

    auth: Any = None
    if settings.auth_token is not None:
        token = settings.auth_token.get_secret_value().encode()

        def auth(_user: str, password: str) -> bool:
            return secrets.compare_digest(password.encode(), token)

    gr.mount_gradio_app(
        app,
        build_ui(engine),
        path=path,
        auth=auth,
        auth_message="Log in with any user name and the server's AUTH_TOKEN as the password.",
        ssr_mode=False,
        mcp_server=False,
    )
    return True
