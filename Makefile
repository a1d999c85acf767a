# One entry point for people and CI. `make setup` is idempotent: it (re)builds .venv only when
# pyproject.toml or the C hot path changed since the last install (an editable install does not
# recompile the extension by itself).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test lint bench demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml src/poolwatch/_speedups.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The core again on the pure-Python hot path (the reference the C one is checked against;
# what Python 3.10 and installs without a compiler run).
PURE_TESTS := tests/test_tracker.py tests/test_urllib3.py tests/test_api.py tests/test_plugin.py \
	tests/test_speedups.py tests/adapters/test_httpx.py tests/adapters/test_aiohttp.py \
	tests/adapters/test_sqlalchemy.py

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)
	POOLWATCH_PURE_PYTHON=1 $(BIN)/python -m pytest -q $(PURE_TESTS)

lint: setup
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy
	$(BIN)/python scripts/unasync.py --check

bench: setup
	$(BIN)/python -m bench

demo: setup
	$(BIN)/poolwatch demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build dist .mypy_cache .pytest_cache .ruff_cache
