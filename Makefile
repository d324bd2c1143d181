# `make serve` and `make test` set themselves up on a fresh machine (Python 3.11 + pip).
# torch is installed first, pinned, so the rest of the install never re-resolves it; everything
# else comes from pyproject.toml, the one dependency list (ranges), at the versions that
# requirements.lock pins (pip's -c: the lock only constrains, the extras choose what is installed).
# Our CI and dev machines carry a local CPU wheel of that pin. Elsewhere, PyPI's Linux torch pulls
# multi-GB CUDA libraries; keep a laptop or a CPU runner on the CPU build with
#   make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
# `make lock` re-resolves the lock (and Cog's requirements-cog.txt) to the newest releases in
# range; `make test-latest` runs the tests without the lock, on those newest releases, so drift
# is seen on purpose.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
INSTALL_TORCH = $(PIP) install "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
LOCK := requirements.lock
# How the extras are installed: at the lock's versions (`make test-latest` empties it).
CONSTRAIN ?= -c $(LOCK)
TEST_EXTRAS := dev,tools,diffusers,ui,modal,cog,bench,docs
BENCH_EXTRAS := diffusers,bench
SERVE_EXTRAS := ui
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: install install-test install-bench serve test test-latest lock lint format clean bench \
	bench-accel bench-accel-quick

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml $(LOCK) | $(BIN)/python
	$(INSTALL_TORCH)
	$(PIP) install $(CONSTRAIN) -e ".[$(SERVE_EXTRAS)]"
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(LOCK) scripts/install-system-deps.sh | $(BIN)/python
	bash scripts/install-system-deps.sh
	$(INSTALL_TORCH)
	$(PIP) install $(CONSTRAIN) -e ".[$(TEST_EXTRAS)]"
	@touch $(VENV)/.installed $@

$(VENV)/.installed-bench: pyproject.toml $(LOCK) scripts/install-system-deps.sh | $(BIN)/python
	bash scripts/install-system-deps.sh
	$(INSTALL_TORCH)
	$(PIP) install $(CONSTRAIN) -e ".[$(BENCH_EXTRAS)]"
	@touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
install-bench: $(VENV)/.installed-bench

serve: install  ## install, then serve the default (mock) model and its UI on http://localhost:8000
	$(BIN)/python -m inference serve

test: install-test lint  ## install everything the tests need, lint, then run them
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The same tests in a venv made afresh each time and installed without the lock, so pip takes
# the newest release each range of pyproject.toml allows (torch stays at $(TORCH)). CI runs it
# after `make test`: a release that breaks us shows up as a failed run, not in the next lock.
test-latest:  ## the tests against the newest releases in range, in a fresh .venv-latest (no lock)
	rm -rf .venv-latest
	$(MAKE) test VENV=.venv-latest CONSTRAIN=

# The lock: one resolution of every extra, for Python 3.11 on any platform, without torch and
# the CUDA libraries PyPI's torch wheels pull in (each machine installs its own torch build
# first; a CUDA build pins its libraries itself). torch is resolved at $(TORCH) so that its own
# dependencies (sympy, networkx, ...) are pinned at versions that fit it. Cog cannot read a
# constraints file (its build copies the requirements file alone), so requirements-cog.txt is
# the same pins for its image: the core and the diffusers extra, with its own torch.
# Cog's image is CUDA 11.8, whose last torch build is 2.7.1 (tools/checks/cog.py checks it).
COG_TORCH := torch==2.7.1
UNLOCKED := ^(triton|nvidia-.*|cuda-.*)==
# `make lock UPGRADE=` keeps every pin that still fits and only resolves what is new or changed
# (uv prefers the versions already in its output file unless told to --upgrade).
UPGRADE ?= --upgrade
COMPILE = $(BIN)/uv pip compile --quiet $(UPGRADE) --custom-compile-command "make lock" \
	--annotation-style line --python-version 3.11

lock: | $(BIN)/python  ## re-resolve requirements.lock and requirements-cog.txt (newest in range)
	$(PIP) install $(CONSTRAIN) uv
	echo "$(TORCH)" > $(LOCK).torch
	cp $(LOCK) $(LOCK).all
	cp requirements-cog.txt $(LOCK).cog
	$(COMPILE) pyproject.toml --all-extras --universal -c $(LOCK).torch -o $(LOCK).all
	grep -Ev '$(UNLOCKED)|^torch==' $(LOCK).all > $(LOCK)
	echo "$(COG_TORCH)" | $(COMPILE) pyproject.toml - --extra diffusers -c $(LOCK) \
		--python-platform x86_64-manylinux_2_28 -o $(LOCK).cog
	grep -Ev '$(UNLOCKED)' $(LOCK).cog > requirements-cog.txt
	rm -f $(LOCK).torch $(LOCK).all $(LOCK).cog

bench: install-bench  ## throughput, latency, cold start vs the ceiling, a naive server, LitServe
	$(BIN)/python -m tools.bench $(BENCH_ARGS)

bench-accel: install-bench  ## a stand-in fast accelerator served by ours, LitServe, naive (~10 min)
	$(BIN)/python -m tools.bench.accel $(BENCH_ARGS)

bench-accel-quick: install-bench  ## issue 25: batch policies, LitServe, 2 devices; 1/8/64 clients (~8 min)
	$(BIN)/python -m tools.bench.accel --quick --out results/accel-quick $(BENCH_ARGS)

# The linters alone, at the lock's pins: lint and format need nothing else (no torch), and a
# venv from `make serve` lacks them. lint-imports checks the layer order of inference/
# (pyproject.toml's [tool.importlinter] contracts).
$(BIN)/ruff $(BIN)/lint-imports: | $(BIN)/python
	$(PIP) install $(CONSTRAIN) ruff import-linter

lint: $(BIN)/ruff $(BIN)/lint-imports  ## ruff check and format, and lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(BIN)/ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .venv-latest .pytest_cache .ruff_cache test-artifacts
