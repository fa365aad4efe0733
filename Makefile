# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export DEBUG ?= 1

.PHONY: run test lint typecheck pytest bench browser-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py syncpipelines
	$(BIN)/python manage.py ensuredemouser
	$(BIN)/python manage.py runserver $(HOST):$(PORT)

browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "Installing Debian's chromium for the browser tests"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

# The whole suite on SQLite, then the database-facing tests again on PostgreSQL (with Redis).
TEST_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/postgres
export TEST_POSTGRES_URL

pytest: $(VENV)/.installed-dev browser-deps
	$(BIN)/pytest
	@if [ "$$PIPELINE_APP_REQUIRE_SERVICES" = 1 ] || pg_isready -q -d "$(TEST_POSTGRES_URL)"; then \
		echo "== PostgreSQL pass =="; \
		DATABASE_URL="$(TEST_POSTGRES_URL)" $(BIN)/pytest -m postgres; \
	else \
		echo "PostgreSQL unreachable: skipping the PostgreSQL pass (required in CI)"; \
	fi

test: lint typecheck pytest

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/runs.py
	$(BIN)/python bench/jobs.py
	$(BIN)/python bench/dashboard.py

clean:
	rm -rf $(VENV) staticfiles test-artifacts
