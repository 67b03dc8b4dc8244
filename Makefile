# Product Shop — every developer and CI command goes through here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8000
# apt-get as root, or through sudo when not.
APT    := $(if $(filter 0,$(shell id -u)),,sudo) DEBIAN_FRONTEND=noninteractive apt-get
# The resolver `make lock` installs, pinned: the same pyproject.toml gives the same locks anywhere.
UV_VERSION := 0.13.9
LOCK_FLAGS := --python-version 3.11 --generate-hashes --custom-compile-command "make lock"

.PHONY: demo test lint typecheck unit install install-runtime lock bench clean tools browser

# The development environment: runtime and dev dependencies (requirements-dev.lock), the project
# editable.
$(STAMP): pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## make install-runtime VENV=DIR: a production-style install into DIR: the runtime dependencies
## only (requirements.lock, hashes checked) and the project itself, not editable
install-runtime:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --force-reinstall .
	rm -f $(STAMP)  # if DIR was a development environment, the next make test sets it up again

## make demo: migrate a SQLite file under var/, seed demo data, serve on 127.0.0.1:$(PORT)
demo: $(STAMP)
	$(BIN)/product-shop demo --port $(PORT) --data-dir var

## make tools: the Debian packages the tests use, installed with apt when missing: promtool
## (package prometheus; only the command is used, no server is started) checks the alert rules.
tools:
	@command -v promtool >/dev/null || { \
		$(APT) install -y --no-install-recommends prometheus >/dev/null 2>&1 || \
		{ $(APT) update >/dev/null && $(APT) install -y --no-install-recommends prometheus >/dev/null; }; }

## make browser: Debian's chromium for the browser tests (Playwright drives it; it never
## downloads a browser of its own), installed with apt when missing.
browser:
	@command -v chromium >/dev/null || { \
		$(APT) install -y --no-install-recommends chromium >/dev/null 2>&1 || \
		{ $(APT) update >/dev/null && $(APT) install -y --no-install-recommends chromium >/dev/null; }; }

## make test: lint, types, and the whole pytest suite (SQLite and, when reachable, PostgreSQL),
## browser tests included
test: $(STAMP) tools browser lint typecheck
	$(BIN)/pytest -n 2 --dist loadgroup --durations=30

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

## make lock: re-resolve requirements.lock (runtime) and requirements-dev.lock (runtime + dev,
## held to the same runtime pins) after editing pyproject.toml. Versions already locked stay
## (uv prefers the pins in the existing files); UPGRADE=--upgrade moves them all,
## UPGRADE="--upgrade-package NAME" one.
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip compile pyproject.toml $(LOCK_FLAGS) $(UPGRADE) -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev -c requirements.lock $(LOCK_FLAGS) $(UPGRADE) \
		-o requirements-dev.lock

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

## make bench: checkout benchmark against PostgreSQL (needs pgbench; see docs/benchmarks.md)
bench: $(STAMP)
	$(BIN)/python bench/checkout_bench.py
