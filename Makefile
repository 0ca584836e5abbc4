# One entry point for every task: `make help` lists them.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.deps-stamp
CORE_SRC := $(shell find src -name '*.rs') Cargo.toml pyproject.toml
CORE_STAMP := $(VENV)/.core-stamp

.PHONY: help venv build build-release system-deps test test-rust test-python lint bench demo clean

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(STAMP): requirements-dev.txt requirements-bench.txt
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

venv: $(STAMP) ## Create .venv with the development dependencies.

$(CORE_STAMP): $(STAMP) $(CORE_SRC)
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(BIN)):$$PATH $(BIN)/maturin develop -q
	touch $@

build: $(CORE_STAMP) ## Build the Rust core (debug) into .venv.

build-release: $(STAMP) ## Build the Rust core with optimisations (for benchmarks).
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(BIN)):$$PATH $(BIN)/maturin develop -q --release
	rm -f $(CORE_STAMP)

system-deps: ## Install the Debian packages the tests start (needs root; skipped when present).
	@need=""; \
	for p in prometheus prometheus-pushgateway wrk libmariadb-dev pkg-config; do \
	  dpkg -s $$p >/dev/null 2>&1 || need="$$need $$p"; \
	done; \
	if [ -n "$$need" ]; then \
	  echo "installing:$$need"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null; \
	fi

test-rust: ## Rust unit tests (the engine, without Python).
	cargo test -q --no-default-features

test-python: build ## Python tests against real services: SQLite, PostgreSQL, then MariaDB for DB-specific ones.
	$(BIN)/pytest -q -p no:cacheprovider
	METRICS_TEST_DB=postgres $(BIN)/pytest -q -p no:cacheprovider
	METRICS_TEST_DB=mysql $(BIN)/pytest -q -p no:cacheprovider tests/instrument tests/test_commands.py tests/test_models.py tests/test_health.py

test: test-rust test-python ## The whole suite.

lint: build ## ruff, mypy, rustfmt, clippy (mypy loads the app, so the core is built first).
	$(BIN)/ruff check python tests bench example dashboards deploy
	$(BIN)/ruff format --check python tests bench example dashboards deploy
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest metrics._core
	cargo fmt --check
	cargo clippy -q --all-targets -- -D warnings

bench: build-release ## Benchmarks side by side with the anchors (release build).
	$(BIN)/pip install -q -r requirements-bench.txt
	$(BIN)/python bench/core.py
	$(BIN)/python bench/multiprocess.py
	$(BIN)/python bench/http_requests.py
	$(BIN)/python bench/instrument.py

demo: build ## Run the example site on http://127.0.0.1:8000.
	bash scripts/demo.sh

clean: ## Remove build products and .venv.
	rm -rf target $(VENV)
