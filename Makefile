# The two set-up commands of the README, and their parts.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# PyTorch (CPU) for the tests of examples/torch_cnn.py and the integrations; an extra, not a
	# requirement. First, so that lightning (in the dev extra) finds it installed.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## The main job: the service on the embedded default (SQLite), local workers, the example
## ASHA study on scikit-learn's digits to completion; prints progress and the best trials.
demo: $(STAMP)
	$(BIN)/tuneyard demo

## Lint, type-check and every test (unit, API on SQLite and PostgreSQL, real processes).
test: $(STAMP)
	$(BIN)/ruff check tuneyard tests examples
	$(BIN)/ruff format --check tuneyard tests examples
	$(BIN)/mypy tuneyard
	$(BIN)/python -m pytest -rs -q

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
