# `make run` and `make test` work from a fresh clone: they create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/molecule up

# The suite starts a few hundred Python processes (API, worker, agents): with bytecode caching
# on (PYTHONDONTWRITEBYTECODE unset) each imports its modules compiled once, not compiled again.
test: install
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

bench: install
	$(BIN)/python -m bench.deadline_precision
	$(BIN)/python -m bench.heartbeat_ingest
	$(BIN)/python -m bench.worker_rss
	$(BIN)/python -m bench.docker_create
	$(BIN)/python -m bench.lifecycle_latency
	$(BIN)/python -m bench.a2a_proxy
	$(BIN)/python -m bench.activity_log
	$(BIN)/python -m bench.secrets

clean:
	rm -rf $(VENV) .molecule .pytest_cache .mypy_cache .ruff_cache
