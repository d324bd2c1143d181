"""The Gradio UI's progress bar follows the engine's step events (the ones a prediction's logs
and stream show), seen by a real ``gradio_client``."""

from __future__ import annotations

import time

import pytest

from inference.http.app import create_app
from inference.service import Service
from inference.settings import Settings
from tests.fakes import SlowStepsModel
from tests.servers import serving_in_thread
from tests.test_ui import ui_request

pytest.importorskip("gradio")
from gradio_client import Client


def test_the_progress_bar_counts_denoising_steps() -> None:
    settings = Settings(ui=True, max_wait_ms=0)
    service = Service(SlowStepsModel(step_s=0.05), settings).start()
    try:
        with serving_in_thread(create_app(settings, service)) as url:
            client = Client(url + "/ui/", verbose=False)
            job = client.submit(
                *ui_request(seed=1, steps=30, width=64, height=64), api_name="/generate"
            )
            seen: list[tuple[int, int, str]] = []
            while not job.done():
                for unit in job.status().progress_data or []:
                    seen.append((unit.index, unit.length, unit.desc))
                time.sleep(0.02)
            job.result()
    finally:
        service.stop()
    assert seen, "no progress reached the client"
    assert {length for _, length, _ in seen} == {30}
    assert {desc for *_, desc in seen} == {"Denoising"}
    steps = [index for index, *_ in seen]
    assert steps == sorted(steps) and 0 < steps[0] < steps[-1] <= 30
