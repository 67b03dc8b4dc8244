# Product Shop — every developer and CI command goes through here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8000

.PHONY: demo test lint typecheck unit install lock bench clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## make demo: migrate a SQLite file under var/, seed demo data, serve on 127.0.0.1:$(PORT)
demo: $(STAMP)
	$(BIN)/product-shop demo --port $(PORT) --data-dir var

## make test: lint, types, and the whole pytest suite (SQLite and, when reachable, PostgreSQL)
test: $(STAMP) lint typecheck
	$(BIN)/pytest -n 2 --dist loadgroup

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

## make lock: re-resolve requirements.lock after editing pyproject.toml
lock:
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes -o requirements.lock

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

## make bench: checkout benchmark against PostgreSQL (needs pgbench; see docs/benchmarks.md)
bench: $(STAMP)
	$(BIN)/python bench/checkout_bench.py
