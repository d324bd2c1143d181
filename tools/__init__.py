"""Repository tooling, run from a checkout, never shipped: nothing in ``inference/`` imports it.

- ``python -m tools.check [ROOT]``: the Space, Cog and Modal deployment files, checked offline.
- ``python -m tools.bench ...``: throughput, latency and cold start against peer servers.
- ``tools.tiny``: Stable Diffusion pipelines with random weights, for tests, demos and the bench.

``pip install .`` installs only ``inference`` (pyproject.toml's package list), so no image carries
this folder or its dependencies (the ``tools`` extra: ``pip install -e ".[tools]"``).
"""
