# qallegro: `make run` trains Allegro on the embedded rMD17 aspirin data; `make test` runs the test suite.
# Both create .venv and install the project (with its dev extra) first if needed, at the versions in uv.lock.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# uv (PyPI) installs from the lock; pip only bootstraps it into .venv. --inexact keeps what else is in .venv.
UV_VERSION := 0.13.9
# UV_SYSTEM_CERTS: the platform's certificate store, as pip uses (not uv's bundled Mozilla roots).
UV := UV_PROJECT_ENVIRONMENT=$(abspath $(VENV)) UV_SYSTEM_CERTS=1 $(BIN)/uv
SYNC := $(UV) sync --locked --inexact --extra dev
LOCK_ARGS ?=

.PHONY: install run test lint docs clean peer-venv lock gpu-check

install: $(STAMP)

$(STAMP): pyproject.toml uv.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(SYNC)
	touch $(STAMP)

# Re-resolve uv.lock after editing pyproject.toml, keeping every locked version that still fits;
# `make lock LOCK_ARGS=--upgrade` moves everything to the newest allowed, `LOCK_ARGS="--upgrade-package jax"` one.
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(UV) lock $(LOCK_ARGS)

# On a machine with an NVIDIA GPU: the cuda extra, the GPU-relevant tests and the GPU benchmarks (tables in
# experiments/results/gpu/). Without a GPU it stops at once with one line and exit status 1.
gpu-check:
	@$(PYTHON) experiments/benchmarks/gpu_check.py --preflight
	$(MAKE) install
	$(SYNC) --extra cuda
	$(BIN)/python -m experiments.benchmarks.gpu_check

run: install
	$(BIN)/python -m experiments.run --dataset rmd17-aspirin --model allegro --profile cpu

test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=15 tests

lint: install
	$(BIN)/ruff check qallegro experiments tests

# API reference from the docstrings (Sphinx autodoc + napoleon); warnings are errors.
docs: install
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

# PyTorch Allegro (the peer of experiments/benchmarks/peer.py) in its own venv: torch first (CPU wheel), then
# nequip-allegro 0.8 (pulls nequip 0.19).
PEER_VENV := .venv-peer
peer-venv: $(PEER_VENV)/.installed

$(PEER_VENV)/.installed:
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --upgrade pip
	$(PEER_VENV)/bin/python -m pip install torch==2.13.0
	$(PEER_VENV)/bin/python -m pip install "nequip-allegro>=0.8,<0.9" "nequip>=0.19,<0.20" ase
	touch $@

clean:
	rm -rf $(VENV) runs .pytest_cache docs/_build
