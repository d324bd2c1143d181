"""The LitServe peer: the same model behind LitServe with its dynamic batching enabled.

LitServe batches requests that arrive within ``batch_timeout`` seconds, up to ``max_batch_size``,
and hands ``predict`` one list. This peer uses the same ``MAX_BATCH_SIZE`` and ``MAX_WAIT_MS`` as
the served engine so the two batching policies start equal, serves the same model
(``build_model`` from the same settings/env vars) and answers the same JSON shape as
``inference.http``. The request body is typed as ``GenerateRequest``, so LitServe's FastAPI
validates it in the API process as ours does (no ``from __future__ import annotations`` here:
LitServe reads the annotation object). Requests whose batch keys differ are split into one
model call per key, as the engine does.

Run: ``python tools/bench/peers/litserve_server.py --port 8002`` (MODEL=... selects the model).
"""

import argparse
import base64
from collections.abc import Hashable
from typing import Any

import litserve as ls
from fastapi import HTTPException

from inference import codec
from inference.errors import InferenceError
from inference.models import Model, build_model
from inference.schema import GenerateRequest, Job
from inference.settings import Settings
from inference.validation import Validator


class DiffusionAPI(ls.LitAPI):
    """setup / decode / predict(batch) / encode: the LitServe hooks around one model."""

    def setup(self, device: str) -> None:
        self.settings = Settings()
        self.model: Model = build_model(self.settings)
        self.model.load()
        self.validator = Validator(self.model, self.settings)

    def decode_request(self, request: GenerateRequest, **kwargs: Any) -> Job:
        try:
            return self.validator.job(request)
        except InferenceError as exc:
            raise HTTPException(422, exc.message) from None

    def predict(self, jobs: list[Job], **kwargs: Any) -> list[tuple[list[Any], int, str]]:
        groups: dict[Hashable, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(self.model.batch_key(job), []).append(i)
        out: list[tuple[list[Any], int, str]] = [([], 0, "png")] * len(jobs)
        for indices in groups.values():
            group = [jobs[i] for i in indices]
            size = sum(job.num_outputs for job in group)
            for i, pixels in zip(indices, self.model.generate(group), strict=True):
                out[i] = (pixels, size, jobs[i].output_format)
        return out

    def unbatch(self, output: list[Any]) -> list[Any]:
        return list(output)

    def encode_response(self, output: tuple[list[Any], int, str], **kwargs: Any) -> dict[str, Any]:
        pixels, batch_size, fmt = output
        return {
            "images": [
                {
                    "data": base64.b64encode(codec.encode(p, fmt)).decode("ascii"),
                    "width": int(p.shape[1]),
                    "height": int(p.shape[0]),
                    "format": fmt,
                    "media_type": codec.FORMATS[fmt].media_type,
                }
                for p in pixels
            ],
            "model": self.model.name,
            "batch_size": batch_size,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-timeout-ms", type=float, default=10.0)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    api = DiffusionAPI(
        max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout_ms / 1000.0
    )
    # fast_queue: LitServe's ZeroMQ transport, its own advice above ~100 requests/s.
    server = ls.LitServer(
        api, accelerator="auto", devices=1, workers_per_device=1, timeout=120, fast_queue=True
    )
    server.run(host=args.host, port=args.port, log_level=args.log_level, generate_client_file=False)


if __name__ == "__main__":
    main()
