# Self-documenting: `make help` lists the targets. Needs only Python 3.11+, git and make.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
INSTALLED := $(VENV)/.installed
export PATH := $(BIN):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help venv data data-mnist run report ui board serve test test-slow lint format bench lock clean-venv

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(INSTALLED): requirements.lock requirements-dev.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "mnist-lab needs Python 3.11+; set PYTHON=python3.11 (or newer)")'
	@echo "==> creating $(VENV) from requirements.lock + requirements-dev.lock (first time: a few minutes)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock -r requirements-dev.lock
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

venv: $(INSTALLED) ## create/update the virtual environment from the lock file

data: venv ## make data/ match data.dvc (DVC cache, DVC remote, or regenerate the bundled default)
	@mnist-lab data restore

data-mnist: venv ## download real MNIST (~11 MB, md5-checked) into data/ and `dvc add` it (MIRROR=<url> first)
	mnist-lab data ingest mnist $(if $(MIRROR),--mirror '$(MIRROR)')

run: data ## the main job: set up, get the data, run the pipeline (dvc repro), print the results
	dvc repro
	@mnist-lab sync --quiet
	@echo
	@mnist-lab report --where

report: venv ## print the models' metrics and MLflow run ids
	@mnist-lab report

ui: venv ## open the MLflow UI on the local store
	mnist-lab ui

board: venv ## the experiments page on http://127.0.0.1:8050 (PORT=...): table, query, compare, run, digit pad
	mnist-lab board --port $(or $(PORT),8050)

serve: venv ## serve the registry's champion over REST on port 5001 (PORT=...)
	mnist-lab serve --port $(or $(PORT),5001)

test: venv ## lint and the default test suite (no servers; a few minutes)
	ruff check src tests bench scripts
	lint-imports
	mypy
	pytest -q -n 2 --dist loadfile --durations=10

test-slow: venv .venv-mlflow2/.installed ## tests that start real servers or build other environments
	pytest -q -m slow -n 2 --dist loadfile --durations=15

.venv-mlflow2/.installed: requirements-mlflow2.lock
	@echo "==> creating .venv-mlflow2 (an MLflow 2.x server for compatibility tests)"
	@test -x .venv-mlflow2/bin/python || $(PYTHON) -m venv .venv-mlflow2
	@.venv-mlflow2/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-mlflow2.lock
	@touch $@

lint: venv ## ruff lint and format check, the package's layers (import-linter) and types (mypy)
	ruff check src tests bench scripts
	ruff format --check src tests bench scripts
	lint-imports
	mypy

format: venv ## apply ruff's formatting and fixes
	ruff format src tests bench scripts
	ruff check --fix src tests bench scripts

bench: venv ## benchmarks (figures go into the README by hand)
	python bench/bench_pipeline.py
	python bench/bench_serving.py
	python bench/bench_board.py

lock: ## re-pin requirements.lock (runtime) and requirements-dev.lock, hashed (keeps pins; UPGRADE=1: all afresh)
	$(PYTHON) scripts/lock.py $(if $(UPGRADE),--upgrade)

clean-venv: ## remove the virtual environment
	rm -rf $(VENV)
