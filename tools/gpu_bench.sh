#!/usr/bin/env bash
# One unattended GPU check, under 10 minutes on one H100/H200-class GPU: the served SD 1.5
# benchmark (python -m tools.bench.gpu, ~9 min budget), then the GPU tests. Run from the
# repository root, with a CUDA build of torch already installed. Results: results/gpu.md.
set -uo pipefail
PY=${PYTHON:-python}
if ! "$PY" -c "import diffusers, litserve, pytest" 2>/dev/null; then
    "$PY" -m pip install -q -e '.[diffusers,bench,dev]' || exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
timeout 520 "$PY" -m tools.bench.gpu --budget-s 480 --out results "$@"
bench=$?
timeout 60 "$PY" -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider
tests=$?
echo "bench exit $bench, GPU tests exit $tests"
exit $(( bench || tests ))
