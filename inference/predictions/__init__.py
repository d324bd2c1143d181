"""Predictions: asynchronous jobs with an id, progress, webhooks and cancel.

The machinery behind Replicate's and Cog's HTTP protocols (``inference/http/protocols/``):
``record`` (one prediction and its transitions), ``store`` (the interface and the in-process
store), ``modal_store`` (the same over Modal's primitives), ``webhooks`` (which URLs may be
called, signed deliveries, retries), ``envelopes`` (each protocol's JSON)
and ``events`` (server-sent events). It never imports ``modal``; the routes live in
``inference/http/``.
"""

from inference.predictions.record import EVENTS, TERMINAL, Prediction, new_id
from inference.predictions.store import LocalStore, PredictionStore
from inference.predictions.webhooks import WebhookSender, check_target

__all__ = [
    "EVENTS",
    "TERMINAL",
    "LocalStore",
    "Prediction",
    "PredictionStore",
    "WebhookSender",
    "check_target",
    "new_id",
]
