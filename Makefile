# `make serve` and `make test` set themselves up on a fresh machine (Python 3.11 + pip).
# torch is installed first from its pinned CPU build so pip never resolves a multi-GB CUDA
# build on a laptop or in CI; everything else comes from pyproject.toml, the one dependency list.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
TEST_EXTRAS := dev,diffusers,ui,modal,cog,bench
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: install install-test serve test lint format check clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install "$(TORCH)"
	$(PIP) install -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml scripts/install-system-deps.sh | $(BIN)/python
	bash scripts/install-system-deps.sh
	$(PIP) install "$(TORCH)"
	$(PIP) install -e ".[$(TEST_EXTRAS)]"
	@touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

serve: install  ## install, then serve the default (mock) model on http://localhost:8000
	$(BIN)/python -m inference serve

test: install-test  ## install everything the tests need, then run them
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-test  ## throughput, latency, cold start vs the ceiling, a naive server, LitServe
	$(BIN)/python -m inference bench $(BENCH_ARGS)

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache test-artifacts
