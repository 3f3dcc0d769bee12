# TeamHub: one command to run, one to test. See README.md.
PYTHON ?= python3
VENV ?= .venv
PYTEST_ARGS ?=
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run install test test-embedded test-services lint format smoke bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

## Install, migrate, seed demo data and serve on http://127.0.0.1:8000 (embedded mode),
## with the scheduler that runs the crons in the background (stopped when the server stops).
run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	$(PY) manage.py run_scheduler & scheduler=$$!; \
	trap 'kill $$scheduler 2>/dev/null; wait $$scheduler' EXIT; trap 'exit 130' INT TERM HUP; \
	$(VENV)/bin/uvicorn teamhub.asgi:application --host $(HOST) --port $(PORT) --ws-per-message-deflate false --ws-max-size 131072 --timeout-graceful-shutdown 5

## Install and run the whole test suite (in the mode the environment selects).
test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

## The benchmark suite of issue 7 (services mode: DATABASE_URL and REDIS_URL); see bench/README.md.
bench: install
	$(PY) -m pip install --quiet -e ".[bench]"
	PYTHON=$(PY) bench/run_all.sh

clean:
	rm -rf $(VENV) data .pytest_cache
