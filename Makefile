# Two commands do all set-up on a fresh machine: `make test` and `make demo`.
# Everything is idempotent: a second run only re-checks.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_ARGS ?=
BENCH_ARGS ?=

export OPENBLAS_NUM_THREADS ?= 1

.PHONY: setup test demo bench lint clean system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

system-deps:
	@bash infra/scripts/install-system-deps.sh

setup: system-deps $(STAMP)

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/recsys demo $(DEMO_ARGS)

bench: setup
	$(VENV)/bin/recsys bench $(BENCH_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) var reports .pytest_cache
