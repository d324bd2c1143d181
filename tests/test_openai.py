"""OpenAI's images API, driven by the official ``openai`` client against a real server.

``OpenAI(base_url=<server>/v1, api_key=AUTH_TOKEN)``: generations as base64 and as URLs this
server serves, streamed partial images, errors in OpenAI's shape naming the parameter, and the
same bytes as POST /predict for the same request.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest

openai = pytest.importorskip("openai")

from inference.codec import decode  # noqa: E402
from inference.http.app import create_app  # noqa: E402
from inference.http.protocols.openai.image_store import ImageStore, OverBudget  # noqa: E402
from inference.http.protocols.openai.shapes import partial_steps  # noqa: E402
from inference.models.mock import MockModel  # noqa: E402
from inference.schema import GenerateRequest  # noqa: E402
from inference.service import Service  # noqa: E402
from inference.settings import Settings  # noqa: E402
from tests.fakes import FlaggingModel  # noqa: E402
from tests.servers import serving_in_thread  # noqa: E402

TOKEN = "s3cret"
QUICK = {"steps": 4}  # through extra_body; the size through OpenAI's `size`


class BoomModel(MockModel):
    """The mock (previews included), failing every batch that holds a "boom" prompt."""

    def generate(self, jobs, progress=None, preview=None):  # type: ignore[no-untyped-def]
        if any("boom" in job.prompt for job in jobs):
            raise RuntimeError("boom: simulated CUDA out of memory")
        return super().generate(jobs, progress, preview)


def serve() -> Iterator[str]:
    """A real server on a mock model ("boom" prompts fail), with a bearer token."""
    settings = Settings(auth_token=TOKEN, max_batch_size=2, max_wait_ms=0, ui=False)
    service = Service(BoomModel(), settings).start()
    with serving_in_thread(create_app(settings, service)) as url:
        yield url
    service.stop()


def official_client(url: str) -> Any:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0)


def server_and_client_fixtures() -> tuple[Any, Any]:
    """The ``server`` (one per test module) and ``client`` (the official client) fixtures.

    Each OpenAI test module binds them as its own module-level names; importing the fixtures
    themselves would share nothing more and reads to linters as an unused import.
    """

    @pytest.fixture(scope="module", name="server")
    def server() -> Iterator[str]:
        yield from serve()

    @pytest.fixture(name="client")
    def client(server: str) -> Any:
        return official_client(server)

    return server, client


server, client = server_and_client_fixtures()


def predict(server: str, **request: Any) -> list[bytes]:
    """The images POST /predict makes of ``request`` (image fields as bytes, sent as base64)."""
    for name in ("image", "mask"):
        if name in request:
            request[name] = base64.b64encode(request[name]).decode("ascii")
    headers = {"authorization": f"Bearer {TOKEN}"}
    response = httpx.post(f"{server}/predict", json=request, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return [base64.b64decode(image["data"]) for image in response.json()["images"]]


def test_generations_are_the_same_images_as_predict(client: Any, server: str) -> None:
    result = client.images.generate(
        prompt="a red fox", size="64x80", n=2, model="dall-e-3", extra_body={"seed": 7, **QUICK}
    )
    assert (result.size, result.output_format, result.background) == ("64x80", "png", "opaque")
    assert isinstance(result.created, int) and len(result.data) == 2
    images = [base64.b64decode(item.b64_json) for item in result.data]
    assert decode(images[0]).shape == (80, 64, 3)
    assert [item.seed for item in result.data] == [7, 8]  # an extension: what reproduces it
    same = predict(server, prompt="a red fox", width=64, height=80, num_outputs=2, seed=7, **QUICK)
    assert images == same


def test_size_auto_output_format_and_the_users_identifier(client: Any) -> None:
    result = client.images.generate(
        prompt="a red fox", size="auto", output_format="jpeg", user="user-1", quality="high"
    )
    image = base64.b64decode(result.data[0].b64_json)
    assert image[:3] == b"\xff\xd8\xff" and result.size == "256x256"  # the model's default
    assert result.output_format == "jpeg" and result.safety_identifier == "user-1"


def test_url_responses_are_served_without_the_key_until_they_expire(
    client: Any, server: str
) -> None:
    request = {"prompt": "a red fox", "size": "64x64", "extra_body": {"seed": 9, **QUICK}}
    result = client.images.generate(response_format="url", **request)
    url = result.data[0].url
    assert url.startswith(f"{server}/v1/images/files/") and result.data[0].b64_json is None
    fetched = httpx.get(url)  # no Authorization: the unguessable URL is the credential
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert "max-age=" in fetched.headers["cache-control"]
    b64 = client.images.generate(response_format="b64_json", **request)
    assert fetched.content == base64.b64decode(b64.data[0].b64_json)
    gone = httpx.get(f"{server}/v1/images/files/not-a-token")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"


def test_the_image_store_expires_and_stays_within_its_bytes() -> None:
    now = [0.0]
    store = ImageStore(max_bytes=250, ttl_s=60, clock=lambda: now[0])
    first, second = store.put_all([(b"a" * 100, "image/png"), (b"b" * 100, "image/png")])
    assert len(first) >= 40 and first != second  # 256 random bits, URL-safe
    [third] = store.put_all([(b"c" * 100, "image/png")])  # over 250 bytes: the oldest goes
    assert store.get(first) is None and store.get(second) is not None and store.bytes == 200
    now[0] = 59.0
    assert store.get(third).seconds_left(now[0]) == 1  # type: ignore[union-attr]
    now[0] = 60.0
    assert store.get(third) is None
    store.put_all([(b"d", "image/png")])
    assert len(store) == 1 and store.bytes == 1  # expired ones were dropped


def test_one_responses_images_are_stored_together_or_refused() -> None:
    store = ImageStore(max_bytes=250, ttl_s=60)
    [old] = store.put_all([(b"o" * 100, "image/png")])
    tokens = store.put_all([(b"a" * 100, "image/png"), (b"b" * 100, "image/png")])
    assert store.get(old) is None and all(store.get(token) for token in tokens)
    with pytest.raises(OverBudget) as raised:  # three do not fit: none is stored
        store.put_all([(b"c" * 100, "image/png")] * 3)
    assert (raised.value.needed, raised.value.max_bytes) == (300, 250)
    assert all(store.get(token) for token in tokens) and store.bytes == 200
    with pytest.raises(OverBudget):  # nor does one image larger than the store
        store.put_all([(b"d" * 251, "image/png")])
    assert len(store) == 2


def test_links_that_would_not_fit_the_store_are_refused_naming_the_setting() -> None:
    """A store that holds two of the images but not four: no link may be handed out dead."""
    sizes = png_sizes(GenerateRequest(prompt="x", width=64, height=64, num_outputs=4, seed=1))
    budget_mb = (sum(sizes[:2]) + 1) / 2**20
    settings = Settings(image_link_store_mb=budget_mb, ui=False, max_wait_ms=0)
    service = Service(MockModel(), settings).start()
    with serving_in_thread(create_app(settings, service)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        request = {"prompt": "x", "size": "64x64", "response_format": "url"}
        two = client.images.generate(n=2, extra_body={"seed": 1}, **request)
        assert all(httpx.get(item.url).status_code == 200 for item in two.data)
        assert_bad_request(
            lambda: client.images.generate(n=4, extra_body={"seed": 1}, **request),
            "response_format",
            "IMAGE_LINK_STORE_MB",
        )
        assert all(httpx.get(item.url).status_code == 200 for item in two.data)  # untouched
    service.stop()


def png_sizes(request: GenerateRequest) -> list[int]:
    """The bytes of each image the mock makes of ``request``."""
    service = Service(MockModel(), Settings(ui=False, max_wait_ms=0)).start()
    try:
        return [len(image.data) for image in service.generate(request).images]
    finally:
        service.stop()


def test_a_public_url_setting_is_used_for_links() -> None:
    settings = Settings(public_url="https://me.example/", ui=False, max_wait_ms=0)
    service = Service(MockModel(), settings).start()
    with serving_in_thread(create_app(settings, service)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        result = client.images.generate(prompt="x", size="64x64", response_format="url")
    assert result.data[0].url.startswith("https://me.example/v1/images/files/")
    service.stop()


@pytest.mark.parametrize(
    ("arguments", "param", "named"),
    [
        ({"size": "100x64"}, "size", "size: width must be a multiple of 8, got 100"),
        ({"size": "2048x64"}, "size", "MAX_WIDTH"),
        ({"size": "big"}, "size", "'WIDTHxHEIGHT'"),
        ({"size": "\uff15\uff11\uff12x512"}, "size", "'WIDTHxHEIGHT'"),  # fullwidth digits
        ({"size": "\u0665\u0661\u0662x512"}, "size", "'WIDTHxHEIGHT'"),  # Arabic-Indic
        ({"size": "512x512\n"}, "size", "'WIDTHxHEIGHT'"),
        ({"n": 3}, "n", "n must be <= 2 on this server (MAX_BATCH_SIZE), got 3"),
        ({"n": 9}, "n", "n: Input should be less than or equal to 4"),
        ({"n": 0}, "n", "n: Input should be greater than or equal to 1"),
        ({"response_format": "xml"}, "response_format", "'b64_json' or 'url'"),
        ({"output_format": "gif"}, "output_format", "'png', 'jpeg' or 'webp'"),
        ({"partial_images": 4}, "partial_images", "less than or equal to 3"),
        ({"background": "transparent"}, "background", "'auto' or 'opaque'"),
        ({"extra_body": {"seeed": 1}}, "seeed", "Unknown parameter: 'seeed'"),
        ({"extra_body": {"steps": 500}}, "steps", "steps: Input should be less than or equal"),
    ],
)
def test_bad_parameters_are_400s_in_openais_shape_naming_them(
    client: Any, arguments: dict[str, Any], param: str, named: str
) -> None:
    assert_bad_request(lambda: client.images.generate(prompt="x", **arguments), param, named)


def assert_bad_request(call: Callable[[], Any], param: str, named: str) -> None:
    """``call`` raises the client's 400 in OpenAI's shape, blaming ``param``, saying ``named``."""
    with pytest.raises(openai.BadRequestError) as raised:
        call()
    error = raised.value
    assert (error.status_code, error.param, error.type) == (400, param, "invalid_request_error")
    assert named in error.body["message"], error.body
    assert set(error.body) == {"message", "type", "param", "code"}


def test_a_body_that_is_not_json_or_lacks_the_prompt(server: str) -> None:
    headers = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    url = f"{server}/v1/images/generations"
    broken = httpx.post(url, content=b"{", headers=headers)
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]["message"]
    missing = httpx.post(url, json={"n": 1}, headers=headers)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "prompt"


def test_the_bearer_token_is_checked_in_openais_shape(server: str) -> None:
    wrong = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        wrong.images.generate(prompt="x")
    assert raised.value.code == "invalid_api_key" and raised.value.status_code == 401
    assert raised.value.response.headers["www-authenticate"] == "Bearer"


def test_streaming_sends_partial_images_then_the_image(client: Any, server: str) -> None:
    """partial_images=2 over 6 steps: the mock's state at steps 2 and 4, then the image."""
    events = list(
        client.images.generate(
            prompt="a heron",
            size="64x64",
            stream=True,
            partial_images=2,
            extra_body={"seed": 31, "steps": 6},
        )
    )
    assert [e.type for e in events] == ["image_generation.partial_image"] * 2 + [
        "image_generation.completed"
    ]
    assert [e.partial_image_index for e in events[:2]] == [0, 1]
    assert all((e.size, e.output_format) == ("64x64", "png") for e in events)
    final = base64.b64decode(events[-1].b64_json)
    assert final == predict(server, prompt="a heron", width=64, height=64, seed=31, steps=6)[0]
    # Each partial image is the mock's x_t mapped to pixels, at steps partial_steps(6, 2).
    assert partial_steps(6, 2) == {2, 4}
    model = MockModel()
    model.load()
    job = Service(model, Settings()).job(
        GenerateRequest(prompt="a heron", seed=31, steps=6, width=64, height=64)
    )
    states: dict[int, np.ndarray] = {}
    model.generate([job], preview=lambda step, total, render: states.__setitem__(step, render()))
    for e, step in zip(events[:2], (2, 4), strict=True):
        assert np.array_equal(decode(base64.b64decode(e.b64_json)), states[step][0][0])


def test_a_cached_or_unpreviewed_stream_sends_only_the_images(client: Any) -> None:
    arguments = {"prompt": "a heron", "size": "64x64", "stream": True, "n": 2}
    plain = list(client.images.generate(**arguments, extra_body={"seed": 40, **QUICK}))
    assert [(e.type, e.image_index) for e in plain] == [
        ("image_generation.completed", 0),
        ("image_generation.completed", 1),
    ]
    with client.images.with_streaming_response.generate(
        **arguments, partial_images=3, extra_body={"seed": 40, **QUICK}
    ) as response:
        assert response.headers["x-cache"] == "hit"
        lines = [json.loads(line[6:]) for line in response.iter_lines() if line[:6] == "data: "]
    assert [line["type"] for line in lines] == ["image_generation.completed"] * 2
    assert [line["b64_json"] for line in lines] == [e.b64_json for e in plain]


def test_a_model_failure_mid_stream_is_an_error_event(client: Any) -> None:
    stream = client.images.generate(prompt="boom", size="64x64", stream=True, extra_body=QUICK)
    with pytest.raises(openai.APIError) as raised:
        list(stream)
    assert raised.value.code == "model_error" and "server log" in raised.value.message


def test_a_model_that_failed_to_load_is_a_503_before_any_stream() -> None:
    class Broken(MockModel):
        def load(self) -> None:
            raise RuntimeError("no weights here")

    settings = Settings(ui=False)
    service = Service(Broken(), settings)
    with pytest.raises(RuntimeError):
        service.start()
    with serving_in_thread(create_app(settings, service)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        for stream in (False, True):
            with pytest.raises(openai.InternalServerError) as raised:
                client.images.generate(prompt="x", stream=stream)
            assert raised.value.status_code == 503
            assert raised.value.code == "model_not_ready" and raised.value.type == "server_error"
            assert raised.value.response.headers["x-should-retry"] == "false"  # it never loads


def test_flagged_images_are_left_out_and_none_left_is_a_content_policy_error() -> None:
    settings = Settings(ui=False, max_wait_ms=0)
    service = Service(FlaggingModel(), settings).start()
    with serving_in_thread(create_app(settings, service)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        two = client.images.generate(prompt="x", size="64x64", n=2, extra_body={"seed": 2})
        assert [item.seed for item in two.data] == [2]  # seed 3 was flagged
        with pytest.raises(openai.BadRequestError) as raised:
            client.images.generate(prompt="x", size="64x64", extra_body={"seed": 3})
        assert raised.value.code == "content_policy_violation"
        with pytest.raises(openai.APIError) as streamed:
            list(client.images.generate(prompt="x", stream=True, extra_body={"seed": 5}))
        assert streamed.value.code == "content_policy_violation"
    service.stop()


class SlowSteps(MockModel):
    """The mock (previews included), sleeping in every step."""

    def generate(self, jobs, progress=None, preview=None):  # type: ignore[no-untyped-def]
        def slow(step: int, total: int) -> None:
            time.sleep(0.05)
            if progress is not None:
                progress(step, total)

        return super().generate(jobs, slow, preview)


def test_a_client_that_leaves_a_stream_stops_its_batch(caplog: pytest.LogCaptureFixture) -> None:
    """Twice, collected while the server runs: that is when a task left pending by the first
    stream was reliably reported ("Task was destroyed but it is pending")."""
    settings = Settings(ui=False, max_wait_ms=0)
    service = Service(SlowSteps(), settings).start()
    with serving_in_thread(create_app(settings, service)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        for left in (1, 2):
            stream = client.images.generate(
                prompt="x", size="64x64", stream=True, partial_images=3, extra_body={"steps": 60}
            )
            first = next(iter(stream))
            assert first.type == "image_generation.partial_image"
            stream.close()
            deadline = time.monotonic() + 10
            while service.engine.stats.abandoned_batches < left and time.monotonic() < deadline:
                time.sleep(0.05)
        gc.collect()  # a task nobody awaited is reported when it is collected
    assert service.engine.stats.abandoned_batches == 2 and service.engine.stats.model_calls == 0
    service.stop()
    assert "Task was destroyed" not in caplog.text


#: A streamed generation as raw ASGI: the request the openai client sends with stream=True.
STREAM_BODY = json.dumps(
    {"prompt": "x", "size": "64x64", "stream": True, "partial_images": 3, "steps": 60}
).encode()


@pytest.mark.parametrize("events_before_leaving", [0, 1])
def test_no_task_outlives_a_stream_the_client_left(events_before_leaving: int) -> None:
    """The client leaves before the first event or after one: either way the submission is
    cancelled and awaited before the response returns."""
    settings = Settings(ui=False, max_wait_ms=0)
    service = Service(SlowSteps(), settings).start()
    app = create_app(settings, service)
    sent: list[dict[str, Any]] = []

    async def scenario() -> set[asyncio.Task[Any]]:
        body_sent = False
        events = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": STREAM_BODY, "more_body": False}
            if events_before_leaving:
                await events.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            chunks = [m for m in sent if m["type"] == "http.response.body" and m["body"]]
            if len(chunks) >= events_before_leaving:
                events.set()

        await app(asgi_post("/v1/images/generations", STREAM_BODY), receive, send)
        return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]

    try:
        assert asyncio.run(scenario()) == set()
        bodies = [m["body"] for m in sent if m["type"] == "http.response.body" and m["body"]]
        assert len(bodies) == events_before_leaving
        deadline = time.monotonic() + 10  # the abandoned request never reaches its last step
        while service.engine.stats.abandoned_batches == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service.engine.stats.model_calls == 0
    finally:
        service.stop()


def asgi_post(path: str, body: bytes) -> dict[str, Any]:
    """The scope of a JSON POST as uvicorn passes it (ASGI 2.3, like its HTTP protocols)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


def test_partial_images_are_spread_over_the_steps_and_never_the_last() -> None:
    assert partial_steps(20, 3) == {5, 10, 15}
    assert partial_steps(6, 1) == {3}
    assert partial_steps(2, 3) == {1}  # fewer steps, fewer partial images
    assert partial_steps(1, 3) == set() and partial_steps(8, 0) == set()


def test_the_public_url_setting_is_checked() -> None:
    assert Settings(public_url="").public_url is None  # an empty Space variable: unset
    assert Settings(public_url="https://a.hf.space/").public_url == "https://a.hf.space"
    with pytest.raises(ValueError, match="public_url"):
        Settings(public_url="a.hf.space")
