"""Batch jobs: a file of requests in, images and a manifest out; resumable.

The job is runtime-agnostic: it takes a *map function* that turns a list of request dicts into
``(position, result dict or exception)`` pairs in any order. Locally that is the in-process
fleet (``fleet_map``: each line on the model it names; ``service_map`` for one service); on
Modal it is ``Model().generate.map(...)`` (see deploy.py). So ``python -m inference batch``
and ``modal run deploy.py::batch`` run the very same job.

``reading`` validates every line before anything is sent and names each request by a hash of
its content, so a re-run skips what is done; ``runner`` fixes seeds, writes images and the
manifest as results arrive, and resumes; ``command`` is the local CLI.
"""

from inference.jobs.reading import Item, read_items
from inference.jobs.runner import (
    MANIFEST_NAME,
    BatchSummary,
    MapFunction,
    fleet_map,
    run_batch,
    service_map,
)

__all__ = [
    "MANIFEST_NAME",
    "BatchSummary",
    "Item",
    "MapFunction",
    "fleet_map",
    "read_items",
    "run_batch",
    "service_map",
]
