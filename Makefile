# qallegro: `make run` trains Allegro on the embedded rMD17 aspirin data; `make test` runs the test suite.
# Both create .venv and install the project (with its dev extra) first if needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

run: install
	$(BIN)/python -m experiments.run --dataset rmd17-aspirin --model allegro --profile cpu

test: install
	$(BIN)/python -m pytest -n 2 --durations=15 tests

clean:
	rm -rf $(VENV) runs .pytest_cache
