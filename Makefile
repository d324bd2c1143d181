# `make serve` and `make test` set themselves up on a fresh machine (Python 3.11 + pip).
# torch is installed first, pinned, so the rest of the install never re-resolves it; everything
# else comes from pyproject.toml, the one dependency list. Our CI and dev machines carry a local
# CPU wheel of that pin. Elsewhere, PyPI's Linux torch pulls multi-GB CUDA libraries; keep a
# laptop or a CPU runner on the CPU build with
#   make test TORCH_INDEX=https://download.pytorch.org/whl/cpu

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
INSTALL_TORCH = $(PIP) install "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
TEST_EXTRAS := dev,tools,diffusers,ui,modal,cog,bench
BENCH_EXTRAS := diffusers,bench
SERVE_EXTRAS := ui
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: install install-test install-bench serve test lint format check clean bench bench-accel

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(INSTALL_TORCH)
	$(PIP) install -e ".[$(SERVE_EXTRAS)]"
	@touch $@

$(VENV)/.installed-test: pyproject.toml scripts/install-system-deps.sh | $(BIN)/python
	bash scripts/install-system-deps.sh
	$(INSTALL_TORCH)
	$(PIP) install -e ".[$(TEST_EXTRAS)]"
	@touch $(VENV)/.installed $@

$(VENV)/.installed-bench: pyproject.toml scripts/install-system-deps.sh | $(BIN)/python
	bash scripts/install-system-deps.sh
	$(INSTALL_TORCH)
	$(PIP) install -e ".[$(BENCH_EXTRAS)]"
	@touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
install-bench: $(VENV)/.installed-bench

serve: install  ## install, then serve the default (mock) model and its UI on http://localhost:8000
	$(BIN)/python -m inference serve

test: install-test  ## install everything the tests need, then run them
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-bench  ## throughput, latency, cold start vs the ceiling, a naive server, LitServe
	$(BIN)/python -m tools.bench $(BENCH_ARGS)

bench-accel: install-bench  ## a stand-in fast accelerator served by ours, LitServe, naive (~8 min)
	$(BIN)/python -m tools.bench.accel $(BENCH_ARGS)

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts
