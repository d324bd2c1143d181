"""Batch jobs: a file of requests in, images and a manifest out; resumable.

The job is runtime-agnostic: it takes a *map function* that turns a list of request dicts into
``(position, result dict or exception)`` pairs in any order. Locally that is the in-process
service (``service_map``); on Modal it is ``Model().generate.map(...)`` (see deploy.py). So
``python -m inference batch`` and ``modal run deploy.py::batch`` run the very same job.

Why it is shaped this way:

- Every line is validated here, before anything is sent, so a bad line costs no GPU time and
  its error names the line and the field.
- A request is identified by a hash of its validated content (plus its occurrence number, so
  two identical seedless lines are two images). Output files are named after that key, so a
  re-run skips a request whose files exist, whatever line it has moved to.
- A request without a seed gets one drawn on the first run and recorded in the manifest; a
  re-run reuses it, so retrying a failed line reproduces what the first run would have made.
- Images and manifest records are written as each result arrives (images atomically), so an
  interrupted job keeps everything it finished. The manifest is an append-only log during the
  run and is compacted to one record per input line at the end; a request still in flight
  when the job stops is recorded as ``pending`` with its seed.
"""

from inference.jobs.reading import Item, read_items
from inference.jobs.runner import MANIFEST_NAME, BatchSummary, MapFunction, run_batch, service_map

__all__ = [
    "MANIFEST_NAME",
    "BatchSummary",
    "Item",
    "MapFunction",
    "read_items",
    "run_batch",
    "service_map",
]
