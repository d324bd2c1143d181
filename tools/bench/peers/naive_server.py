"""The naive peer: FastAPI calling the model once per request, the way most tutorials do it.

No queue, no batching: a plain ``def`` route, so FastAPI runs each request in its thread pool,
and each request makes its own model call with a batch of one. A lock keeps model calls one at a
time, as careful tutorials do: a diffusers pipeline is not thread-safe (the backend sets
``pipe.scheduler`` per call), and on one device parallel calls only contend. Validation, PNG
encoding and HTTP still overlap with the model call in other threads. It serves the same
model (``build_model`` from the same settings/env vars) and answers the same JSON shape as
``inference.http`` (base64 PNG in ``images[i].data``, ``batch_size``), so the load driver and the
bytes on the wire are identical and only the serving strategy differs.

Run: ``python tools/bench/peers/naive_server.py --port 8001`` (MODEL=... selects the model).
"""

from __future__ import annotations

import argparse
import base64
import threading
from typing import Any

import uvicorn
from fastapi import FastAPI

from inference import codec
from inference.models import build_model
from inference.schema import GenerateRequest
from inference.settings import Settings
from inference.validation import Validator

settings = Settings()
model = build_model(settings)
model.load()  # at import, as tutorials do: the server listens once the model is loaded
validator = Validator(model, settings)

model_lock = threading.Lock()
app = FastAPI(title="naive peer")


@app.get("/health")
def health() -> dict[str, str]:
    """200 once listening; the model was loaded before the server started."""
    return {"status": "ok"}


@app.post("/predict")
def predict(body: GenerateRequest) -> dict[str, Any]:
    """One model call per request (batch of one), in FastAPI's thread pool."""
    job = validator.job(body)
    with model_lock:
        pixels = model.generate([job])[0]
    return {
        "images": [
            {
                "data": base64.b64encode(codec.encode(p, job.output_format)).decode("ascii"),
                "seed": seed,
                "width": job.width,
                "height": job.height,
                "format": job.output_format,
                "media_type": codec.FORMATS[job.output_format].media_type,
            }
            for p, seed in zip(pixels, job.seeds, strict=True)
        ],
        "seed": job.seeds[0],
        "model": model.name,
        "batch_size": job.num_outputs,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
