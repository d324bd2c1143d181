"""A prediction as each protocol shows it: Replicate's prediction object, Cog's envelope.

The same functions render HTTP responses, webhook bodies and the server-sent-events stream,
so a webhook carries exactly what a GET would have returned at that moment.

Replicate: the fields its official client reads (``replicate.prediction.Prediction``): id,
model, version, status, input, output, logs, error, metrics, created_at, started_at,
completed_at, urls. Cog (coglet 0.23, measured against its own server): ``id``, ``status``,
``logs``, ``metrics``, plus ``output`` once there is one and ``error`` once there is one; a
``Prefer: respond-async`` creation answers ``{id, status}`` alone.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from inference.predictions.bodies import uri_prefix
from inference.predictions.record import OutputFile, Prediction

#: Writes one output's data: URI.
URI = Callable[[OutputFile], str]
#: Places JSON text already written (``Prediction.input_json``) into a body.
Text = Callable[[bytes], str]
# Where this server serves a prediction. Replicate's router is declared with these very
# strings (its prefix and each route's path), and the envelopes write their links from them
# (Replicate's ``urls``, every protocol's outputs in ``PREDICTIONS_OUTPUT=url`` mode): one
# constant per route, so a link cannot name a path the router does not serve.
PREFIX = "/v1"
PREDICTION_PATH = "/predictions/{prediction_id}"
CANCEL_PATH = PREDICTION_PATH + "/cancel"
STREAM_PATH = PREDICTION_PATH + "/stream"
OUTPUT_PATH = PREDICTION_PATH + "/output/{name}"


def timestamp(seconds: float | None) -> str | None:
    """ISO 8601 in UTC with a Z, as Replicate writes its times."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def data_uri(output: OutputFile) -> str:
    """The whole URI in one string: for a webhook's body, which is signed as a whole (a route
    streams it instead: ``bodies``)."""
    return uri_prefix(output) + base64.b64encode(output.data).decode("ascii")


def output_value(prediction: Prediction, uri: URI = data_uri) -> list[str] | None:
    """The outputs as a list (predict.py's ``list[Path]``): data: URIs, or URLs served here;
    ``uri`` writes a data: URI (``bodies.json_body`` passes one that writes a marker)."""
    if prediction.outputs is None:
        return None
    if prediction.output_urls:
        return [_link(prediction, OUTPUT_PATH, name=o.name) for o in prediction.outputs]
    return [uri(o) for o in prediction.outputs]


def _metrics(prediction: Prediction) -> dict[str, Any]:
    """The record's metrics; a prediction that ended without a result still says how long it
    ran, as Cog does."""
    if prediction.metrics or prediction.started_at is None or prediction.completed_at is None:
        return dict(prediction.metrics)
    return {"predict_time": prediction.completed_at - prediction.started_at}


def _link(prediction: Prediction, path: str, **names: str) -> str:
    """The absolute URL of one of the paths above for ``prediction``."""
    return prediction.base_url + PREFIX + path.format(prediction_id=prediction.id, **names)


def replicate_urls(prediction: Prediction) -> dict[str, str]:
    paths = {"get": PREDICTION_PATH, "cancel": CANCEL_PATH, "stream": STREAM_PATH}
    return {key: _link(prediction, path) for key, path in paths.items()}


def replicate_object(
    prediction: Prediction,
    *,
    summary: bool = False,
    uri: URI = data_uri,
    text: Text | None = None,
) -> dict[str, Any]:
    """Replicate's prediction object; ``summary`` (for lists) leaves out output and logs.
    With ``text`` (``bodies.json_body``'s marker) a large input is echoed from its JSON."""
    echoed: Any = prediction.input
    if text is not None and prediction.input_json is not None:
        echoed = text(prediction.input_json)
    return {
        "id": prediction.id,
        "model": prediction.model,
        "version": prediction.version,
        "input": echoed,
        "logs": None if summary else prediction.logs,
        "output": None if summary else output_value(prediction, uri),
        "data_removed": False,
        "error": prediction.error,
        "status": prediction.status,
        "source": "api",
        "created_at": timestamp(prediction.created_at),
        "started_at": timestamp(prediction.started_at),
        "completed_at": timestamp(prediction.completed_at),
        "urls": replicate_urls(prediction),
        "metrics": _metrics(prediction),
    }


def cog_envelope(prediction: Prediction, *, uri: URI = data_uri) -> dict[str, Any]:
    """Cog's prediction response, with the keys coglet itself sends."""
    body: dict[str, Any] = {
        "id": prediction.id,
        "status": prediction.status,
        "logs": prediction.logs,
        "metrics": {k: v for k, v in _metrics(prediction).items() if k != "total_time"},
    }
    if prediction.outputs is not None:
        body["output"] = output_value(prediction, uri)
    if prediction.error is not None:
        body["error"] = prediction.error
    return body


def cog_accepted(prediction: Prediction) -> dict[str, Any]:
    """Cog's answer to ``Prefer: respond-async``: the id and status alone."""
    return {"id": prediction.id, "status": prediction.status}


def webhook_body(prediction: Prediction) -> dict[str, Any]:
    """What a webhook carries: the envelope of the protocol that created the prediction."""
    if prediction.protocol == "cog":
        return cog_envelope(prediction)
    return replicate_object(prediction)
