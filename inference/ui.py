"""The optional Gradio UI at /ui: a page for people, served by the same engine as the JSON API.

It calls ``service.submit`` directly, so a click in the browser and a ``POST /predict`` share one
batcher, one queue bound, one set of limits and one set of metrics, and the same request gives
the same PNG bytes through either door (a test compares them). Gradio is an optional extra
(``pip install 'diffusion-serve[ui]'``) that adds ~270 MB and seconds of import time, so it is
imported only here, only when the app mounts the UI; without it /ui says how to enable it.

With a registry of more than one model or version, a model picker chooses what serves the
request (a name routes by weight, ``name@version`` pins), and the page's API (``/generate``,
as gradio_client calls it) gains ``model`` as its optional last parameter. With one model the
picker and the parameter are absent, so the API stays exactly what it was.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import inspect
import io
import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.routing import Mount

from inference.errors import InferenceError, error_body
from inference.extras import MissingExtra, installed
from inference.fields import RequestField, request_fields
from inference.results import GenerateResult
from inference.schema import IMAGE_FIELDS

if TYPE_CHECKING:
    import gradio as gr

    from inference.fleet import Fleet
    from inference.service import Service
    from inference.settings import Settings

log = logging.getLogger(__name__)

UI_PATH = "/ui"
#: Where the mounted UI takes uploads (Gradio's route): its bodies may carry images, so the
#: app gives this path the larger body limit.
UPLOAD_PATH = f"{UI_PATH}/gradio_api/upload"
INSTALL_HINT = f"{MissingExtra('the web UI', 'ui').message}, then restart the server"
#: Generated images stay in Gradio's cache this long (seconds) before it deletes them.
CACHE_MAX_AGE_S = 3600
#: The model picker's input (and /generate's parameter) where the registry offers a choice.
MODEL_INPUT = "model"
EXAMPLE_FIELDS = ("prompt", "negative_prompt", "seed", "randomize_seed")
EXAMPLES = [
    ["a red fox in the snow, watercolor", "", 42, False],
    ["a lighthouse at dusk, oil painting", "fog", 7, False],
    ["an isometric city made of glass", "people", 1234, False],
]


def gradio_available() -> bool:
    """True when the ``ui`` extra is installed (checked without importing gradio)."""
    return installed("gradio")


def model_choices(fleet: Fleet) -> list[str]:
    """The picker's choices: the version served by default first (what a call that names no
    model gets), then each model's name (routed by weight) followed by its versions pinned;
    empty when there is nothing to choose (one model with one version)."""
    registry = fleet.registry
    if registry.implicit:
        return []
    ordered = [
        choice
        for spec in registry.models.values()
        for choice in (spec.name, *(str(version.ref) for version in spec.versions))
    ]
    if len(ordered) <= 2:  # one model, one version: its name and its pin are the same thing
        return []
    default = str(fleet.default_ref)
    return [default, *(choice for choice in ordered if choice != default)]


def _describe(result: GenerateResult) -> str:
    t = result.timings
    images = "image" if result.batch_size == 1 else "images"
    flagged = sum(bool(image.nsfw) for image in result.images)
    notes = " · from the result cache" if result.cache == "hit" else ""
    if flagged:  # the checker blacked them out: say so rather than show black squares as art
        notes += f"  \n**{flagged} of {len(result.images)} flagged by the safety checker**"
    return (
        f"Seed **{result.seed}** · model `{result.model}`"
        f"{f' · version `{result.version}`' if result.version else ''} · "
        f"batch of {result.batch_size} {images}  \n"
        f"queue {t.queue_ms:.0f} ms · inference {t.inference_ms:.0f} ms · "
        f"encode {t.encode_ms:.0f} ms · total {t.total_ms:.0f} ms{notes}"
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


#: Labels where the field name alone says too little; every other label is the field's name.
LABELS = {
    "prompt_weight": "Prompt weight (guidance)",
    "num_outputs": "Number of images",
    "loras": "LoRA adapters",
    "image": "Your picture",
    "mask": "Mask: the area to redraw",
}
#: What a person does with each input, in plain words. The schema's descriptions are written
#: for API clients ("omit for the model's default", "base64 in JSON"); a field not listed here
#: (a new one) shows its schema description.
HINTS = {
    "prompt": "Describe the picture you want.",
    "negative_prompt": "What the picture should not contain.",
    "seed": "The same seed and settings make the same picture again.",
    "prompt_weight": "How closely the picture follows the prompt: higher is stricter.",
    "steps": "More steps add detail and take longer.",
    "width": "Picture width in pixels.",
    "height": "Picture height in pixels.",
    "num_outputs": "How many pictures to make at once.",
    "scheduler": "The sampling method; the model's default suits most pictures.",
    "loras": "Styles to apply, comma-separated, each with an optional strength, e.g. "
    "owner/name:0.8, local:style. Leave empty for the server's default.",
    "image": "Upload a picture to start from it",
    "mask": "White is redrawn, black is kept: paint it above, or upload one",
    "strength": "How much to change your picture: 0 keeps it, 1 ignores it.",
}
#: The seed a person starts from when they untick "Randomize seed" before any run.
FIRST_SEED = 42
#: The gallery shows PNG, so the form always asks for it.
FIXED = {"output_format": "png"}
#: Dropdown value standing for "omit this field" (the model's own choice).
OMIT = ""
#: Inputs that only matter with an init image; they sit in their own (folded) section.
IMAGE_CONTROLS = (*IMAGE_FIELDS, "strength")


def _widget(field: RequestField, service: Service) -> Any:
    """A Gradio input for ``field``, bounded by this server's limits and set to its defaults."""
    import gradio as gr

    limits, defaults = service.validator.limits, vars(service.validator.defaults)
    maximum = {
        "steps": limits.max_steps,
        "width": limits.max_width,
        "height": limits.max_height,
        "num_outputs": limits.max_outputs,
    }.get(field.name, field.maximum)
    value = defaults.get(field.name, field.default)
    common = {
        "label": LABELS.get(field.name, field.name.replace("_", " ").capitalize()),
        "info": HINTS.get(field.name, field.description),
        "elem_id": field.name.replace("_", "-"),
    }
    if field.type is bytes:
        # A file path to the upload as it was sent (image_mode=None: no conversion or
        # re-encoding by Gradio), so the service decodes the very bytes an API client sends.
        # gr.Image has no `info`: the description becomes its placeholder.
        description = common.pop("info")
        return gr.Image(
            type="filepath",
            image_mode=None,
            sources=["upload", "clipboard"],
            height=240,
            placeholder=description,
            **common,
        )
    if field.choices:
        choices = [(c, c) for c in field.choices]
        if field.optional:
            choices.insert(0, ("the model's default", OMIT))
        return gr.Dropdown(choices, value=OMIT if value is None else value, **common)
    if field.type is list:  # items in their text form, comma-separated
        return gr.Textbox(placeholder=f"{field.item_form}, ...", **common)
    if field.type is str:
        lines = 2 if field.name == "prompt" else 1
        return gr.Textbox(lines=lines, max_length=field.max_length, **common)
    if field.name == "seed":  # paired with the "Randomize seed" box, ticked at first
        # Hidden, not just disabled, while randomized: Gradio shows an empty Number as 0.
        return gr.Number(
            value=None,
            visible=False,
            precision=0,
            minimum=field.minimum,
            maximum=maximum,
            **common,
        )
    if field.minimum is not None and maximum is not None:
        step = {"width": service.model.size_multiple, "height": service.model.size_multiple}.get(
            field.name, 1 if field.type is int else 0.1
        )
        return gr.Slider(field.minimum, maximum, value=value, step=step, **common)
    precision = 0 if field.type is int else None
    return gr.Number(value=value, precision=precision, minimum=field.minimum, **common)


def _request(names: list[str], values: tuple[Any, ...]) -> dict[str, Any]:
    """The form's values as a request: the seed unless randomized, omitted choices left out,
    uploads as their bytes, and the strength slider only when there is an image."""
    form = dict(zip(names, values, strict=True))
    if form.pop("randomize_seed") or form.get("seed") is None:
        form["seed"] = None
    request = {name: value for name, value in form.items() if value not in (None, OMIT)}
    for field in request_fields():  # sliders hand back floats; uploads, paths; list boxes, text
        if field.type is int and isinstance(request.get(field.name), float):
            request[field.name] = int(request[field.name])
        elif field.type is bytes and field.name in request:
            request[field.name] = Path(request[field.name]).read_bytes()
        elif field.type is list and field.name in request:
            items = field.from_text(request[field.name])
            if items:
                request[field.name] = items
            else:  # an empty box leaves the field to the server's default
                del request[field.name]
    if "image" not in request:
        request.pop("strength", None)
    return request | FIXED


def painted_mask(editor: dict[str, Any] | None, image_path: str | None) -> bytes | None:
    """The strokes painted in the mask editor as a mask PNG the size of ``image_path``: white
    where any stroke is, black elsewhere. None when nothing is painted (an uploaded mask stays).
    """
    import numpy as np
    from PIL import Image

    layers = [layer for layer in (editor or {}).get("layers") or [] if layer is not None]
    if image_path is None or not layers:
        return None
    painted = np.zeros(np.asarray(layers[0]).shape[:2], dtype=bool)
    for layer in layers:
        pixels = np.asarray(layer)
        if pixels.ndim == 3 and pixels.shape[2] == 4:
            painted |= pixels[..., 3] > 0
    if not painted.any():
        return None
    with Image.open(image_path) as image:
        size = image.size
    mask = Image.fromarray(painted.astype(np.uint8) * 255, "L").resize(size, Image.NEAREST)
    out = io.BytesIO()
    mask.save(out, "PNG")
    return out.getvalue()


def _seed_box(randomize: bool, seed: int | None, seed_used: int | None) -> Any:
    """The seed box follows "Randomize seed": hidden and emptied while it is ticked (a number
    there would be ignored); unticked, it offers the last seed used, so a picture you liked
    can be made again."""
    import gradio as gr

    if randomize:
        return gr.Number(value=None, visible=False)
    return gr.Number(value=seed if seed is not None else seed_used or FIRST_SEED, visible=True)


def build_ui(service: Service, fleet: Fleet | None = None) -> gr.Blocks:
    """The Blocks page: one input per request field, bounded by the service's own limits
    (``service``: the default version's), and a model picker where ``fleet`` has a choice.

    Generate sits under the prompt, so it shows without scrolling on a laptop screen; the
    image inputs sit in a folded section, where a mask can be painted on the uploaded picture.
    """
    import gradio as gr

    names: list[str] = []
    progress_bar = gr.Progress()
    choices = model_choices(fleet) if fleet is not None else []

    async def submit(request: dict[str, Any], choice: str | None, step: Any) -> GenerateResult:
        """``request`` on the version ``choice`` names (None: the default one)."""
        if fleet is None or not choices:
            return await service.submit(request, progress=step)
        async with fleet.serving(choice or choices[0]) as routed:
            result = await routed.service.submit(request, progress=step)
        return result.model_copy(update={"version": str(routed.ref)})

    async def generate(progress: Any = progress_bar, *values: Any) -> tuple[list[str], int, str]:
        # The engine's per-step progress (what a prediction's logs and SSE stream show), from
        # its worker thread to the bar: on this event loop, in this call's context (where
        # Gradio keeps the event the bar belongs to).
        loop, context = asyncio.get_running_loop(), contextvars.copy_context()

        def step(done: int, total: int) -> None:
            loop.call_soon_threadsafe(progress, (done, total), "Denoising", context=context)

        form = dict(zip(names, values, strict=True))
        choice = form.pop(MODEL_INPUT, None)
        try:
            result = await submit(_request(list(form), tuple(form.values())), choice, step)
        except InferenceError as exc:  # the user's typo or a server limit: no traceback
            raise gr.Error(exc.message, print_exception=False) from None
        paths = [
            _cache_png(gallery.GRADIO_CACHE, image.data, f"seed-{image.seed}.png")
            for image in result.images
        ]
        return paths, result.seed, _describe(result)

    def use_painted_mask(editor: dict[str, Any] | None, image_path: str | None) -> Any:
        data = painted_mask(editor, image_path)
        if data is None:
            return gr.Image()  # nothing painted: leave the mask as it is
        return _cache_png(gallery.GRADIO_CACHE, data, "painted-mask.png")

    with gr.Blocks(
        title="diffusion-serve",
        analytics_enabled=False,
        delete_cache=(CACHE_MAX_AGE_S, CACHE_MAX_AGE_S),
    ) as demo:
        gr.Markdown(
            f"## diffusion-serve · `{service.model.name}`\n"
            "Describe a picture and press **Generate**. To start from a picture of your own, "
            "or to redraw part of it, open *Start from a picture* below. Programs can ask this "
            "same server for pictures: see the [API docs](../docs)."
        )
        inputs: dict[str, Any] = {}
        with gr.Row():
            with gr.Column(scale=2):
                if choices:  # the last input of the API (after the fields), first on the page
                    picker = gr.Dropdown(
                        choices,
                        value=choices[0],
                        label="Model",
                        info="A model's name shares its traffic among its versions by weight; "
                        "name@version pins a version.",
                        elem_id="model",
                    )
                for field in request_fields():
                    if field.name in FIXED or field.name in IMAGE_CONTROLS:
                        continue
                    inputs[field.name] = _widget(field, service)
                    if field.name == "prompt":
                        button = gr.Button("Generate", variant="primary", elem_id="generate")
                    if field.name == "seed":
                        inputs["randomize_seed"] = gr.Checkbox(label="Randomize seed", value=True)
                with gr.Accordion("Start from a picture (image-to-image, inpainting)", open=False):
                    for field in request_fields():
                        if field.name not in IMAGE_CONTROLS:
                            continue
                        if field.name == "mask":
                            painter = gr.ImageEditor(
                                label="Paint over what to redraw",
                                type="numpy",
                                sources=[],
                                transforms=[],
                                layers=False,
                                brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed"),
                                height=320,
                                elem_id="mask-painter",
                            )
                        inputs[field.name] = _widget(field, service)
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
                # Hidden until a run has used a seed: an empty box (or 0) would mean nothing.
                seed_used = gr.Number(
                    label="Seed used", precision=0, interactive=False, visible=False
                )
                timings = gr.Markdown(elem_id="timings")
        if choices:
            inputs[MODEL_INPUT] = picker
        names.extend(inputs)
        # Named parameters, each optional: gradio_client then fills what a caller leaves out
        # (the uploads, for a call written before they existed) with the form's defaults.
        # The progress bar first, as ``generate`` takes it: Gradio injects it by its default.
        generate.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
                for n, default in (("progress", progress_bar), *((n, None) for n in names))
            ]
        )
        gr.Examples(EXAMPLES, inputs=[inputs[n] for n in EXAMPLE_FIELDS])
        outputs = [gallery, seed_used, timings]
        # No Gradio-side concurrency cap: the engine's bounded queue is the one back-pressure.
        controls = list(inputs.values())
        runs = [
            button.click(generate, controls, outputs, api_name="generate", concurrency_limit=None),
            inputs["prompt"].submit(
                generate, controls, outputs, api_visibility="private", concurrency_limit=None
            ),
        ]
        # Page behaviour only, not part of the API.
        for run in runs:
            run.success(lambda: gr.Number(visible=True), None, seed_used, api_visibility="private")
        seed, randomize = inputs["seed"], inputs["randomize_seed"]
        randomize.change(
            _seed_box, [randomize, seed, seed_used], seed, api_visibility="private", queue=False
        )
        image = inputs["image"]
        # Queued (Gradio's default): with queue=False, a mounted app's editor is handed a file
        # URL without the mount path (/ui) and cannot load the picture.
        image.change(lambda path: path, image, painter, api_visibility="private")
        painter.change(use_painted_mask, [painter, image], inputs["mask"], api_visibility="private")
    return demo


def _mount_notice(app: FastAPI, path: str, message: str) -> None:
    """Answer /ui and below with 501 and ``message``, so a visitor learns how to get the UI."""

    async def ui_unavailable(rest: str = "") -> JSONResponse:
        return JSONResponse(error_body("ui_unavailable", message), status_code=501)

    app.add_api_route(path, ui_unavailable, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        path + "/{rest:path}", ui_unavailable, methods=["GET"], include_in_schema=False
    )


def mount_ui(app: FastAPI, service: Service, settings: Settings, path: str = UI_PATH) -> bool:
    """Mount the UI at ``path``; without gradio, mount a page saying how to enable it.

    With AUTH_TOKEN set, the UI asks for a login (any user name, the token as password), so
    it is no back door around the API's bearer token. Returns whether the UI was mounted;
    ``app.state.ui_unavailable`` says why not (the start-up log repeats it), else is None, and
    ``app.state.ui_url`` is the link ``GET /`` gives (where the notice answers when it is off).
    """
    app.state.ui_url = path + "/"
    app.state.ui_unavailable = None
    if not settings.ui:
        app.state.ui_unavailable = "the web UI is turned off on this server (UI=false); set UI=true"
        _mount_notice(app, path, app.state.ui_unavailable)
        return False
    if not gradio_available():
        app.state.ui_unavailable = INSTALL_HINT
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
        # The app's fleet (app.state.fleet, set before the UI is mounted) offers the models.
        build_ui(service, getattr(app.state, "fleet", None)),
        path=path,
        auth=auth,
        auth_message="Log in with any user name and the server's AUTH_TOKEN as the password.",
        ssr_mode=False,
        mcp_server=False,
    )
    # Gradio ends its heartbeat streams (an open browser tab's) when its stop event is set;
    # the server's shutdown sets it, so a tab never holds the process.
    gradio_app = next(r.app for r in app.routes if isinstance(r, Mount) and r.path == path)
    app.state.stream_closers.append(gradio_app.stop_event.set)
    return True
