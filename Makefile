# The README's two commands are `make run` and `make test`; both set everything up first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# Extra patron_run options, e.g. RUN_ARGS="--no-demo --log-level INFO".
RUN_ARGS ?=

.PHONY: setup run test lint format bench stop clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,embedded]'
	touch $@

run: setup
	$(BIN)/python manage.py patron_run --host $(HOST) --port $(PORT) $(RUN_ARGS)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

# Ends what `make run` started (web, worker, beat: their PIDs are in .patron/run.pids), then the
# embedded PostgreSQL and Redis, and waits until every one has exited.
stop: setup
	$(BIN)/python -c "from config import embedded; embedded.stop()"

clean: stop
	rm -rf .patron staticfiles
