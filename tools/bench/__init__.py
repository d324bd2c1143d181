"""``python -m tools.bench``: throughput, latency and cold start, side by side with peers.

Every server under test runs as its own subprocess on 127.0.0.1, and load comes from yet another
process (``peers/load.py``), so neither the client's event loop nor its JSON decoding steals time
from the server's. For each server, workload and concurrency level the harness records
images/s, latency p50/p95/p99, the mean batch size (from the ``batch_size`` each response reports)
and errors. Peers, on the same model and workload in the same run:

- ``ceiling``: the engine called in-process at its best batch size (no HTTP);
- ``naive``: FastAPI calling the model once per request (``peers/naive_server.py``);
- ``litserve``: LitServe with batching on, the same batch size and wait
  (``peers/litserve_server.py``).

Cold start (process start to the first successful /predict) is split into interpreter + imports,
model load, warm-up (both from /metrics) and the rest (server start-up and the first request).
Results go to ``results/``: ``bench.md`` (tables + goal verdicts), ``bench.json`` and ``bench.png``.

The peers and the load driver are standalone scripts in ``peers/``, each run as its own process.
Nothing heavy is imported at module level here: ``--help`` stays fast and importing the harness
never pulls in litserve, matplotlib or torch.
"""
