# One-liners over the package. `make test` creates the environment on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready
SERVICE ?=
ARGS ?=

.PHONY: test lint plan build publish deploy doctor status e2e bench clean

$(READY): requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(READY)

test: $(READY)
	$(BIN)/pytest $(ARGS)

lint: $(READY)
	$(BIN)/ruff check pipeline tests bench && $(BIN)/ruff format --check pipeline tests bench && $(BIN)/mypy pipeline tests/e2e

plan: $(READY)
	$(BIN)/python -m pipeline plan --branch=staging --offline $(ARGS)
	@echo
	$(BIN)/python -m pipeline plan --branch=main --offline $(ARGS)

build: $(READY)
	$(BIN)/python -m pipeline build --service=$(SERVICE) $(ARGS)

publish: $(READY)
	$(BIN)/python -m pipeline publish $(ARGS)

deploy: $(READY)
	$(BIN)/python -m pipeline deploy $(ARGS)

doctor: $(READY)
	$(BIN)/python -m pipeline doctor $(ARGS)

status: $(READY)
	$(BIN)/python -m pipeline status $(ARGS)

e2e: $(READY)
	PIPELINE_E2E_REQUIRED=1 $(BIN)/pytest -m e2e -rs tests/e2e $(ARGS)

bench: $(READY)
	$(BIN)/python -m bench.bench_deploy && $(BIN)/python -m bench.bench_promote && $(BIN)/python -m bench.bench_plan

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
