# One entry point for every task: `make help` lists them.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two dependency sets: the demo's (pure Python or wheels: nothing beyond Python and Rust) and the
# development one on top of it (test tools, database drivers that need system libraries).
DEMO_STAMP := $(VENV)/.demo-stamp
STAMP := $(VENV)/.deps-stamp
CORE_SRC := $(shell find src -name '*.rs') Cargo.toml pyproject.toml
CORE_STAMP := $(VENV)/.core-stamp
PACKAGE_SRC := $(shell find python -name '*.py' -o -name '*.pyi' -o -name '*.html' -o -name py.typed)
DIST_STAMP := dist/.stamp
# Debian packages the tests start or build against; `make bench` adds wrk.
TEST_DEBS := prometheus prometheus-pushgateway libmariadb-dev pkg-config
BENCH_DEBS := wrk
# The interpreters of the version matrix (pyenv's, on these machines).
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo $(HOME)/.pyenv)
MATRIX_PATH := $(subst $(eval) ,:,$(wildcard $(PYENV_ROOT)/versions/3.1[0-3].*/bin))
# The extension built the other way than the wheel (per Python version), for `make bench`.
EXT_SUFFIX = $(shell $(BIN)/python -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")

.PHONY: help venv build build-release system-deps test test-rust test-python peer-tests lint bench bench-abi demo dist matrix clean

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(DEMO_STAMP): requirements-demo.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-demo.txt
	touch $@

$(STAMP): requirements-dev.txt $(DEMO_STAMP)
	@$(MAKE) --no-print-directory system-deps DEBS="$(TEST_DEBS)"
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

venv: $(STAMP) ## Create .venv with the development dependencies (installs missing Debian packages).

$(CORE_STAMP): $(DEMO_STAMP) $(CORE_SRC)
	rm -f python/metrics/_core.*.so  # a stale per-version build would shadow the abi3 one
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(BIN)):$$PATH $(BIN)/maturin develop -q
	touch $@

build: $(CORE_STAMP) ## Build the Rust core (debug) into .venv.

build-release: $(DEMO_STAMP) ## Build the Rust core with optimisations (for benchmarks).
	rm -f python/metrics/_core.*.so
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(BIN)):$$PATH $(BIN)/maturin develop -q --release
	rm -f $(CORE_STAMP)

system-deps: ## Install the Debian packages the tests start, when missing (root; else names the command).
	@need=""; \
	for p in $(or $(DEBS),$(TEST_DEBS) $(BENCH_DEBS)); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || need="$$need $$p"; \
	done; \
	if [ -n "$$need" ]; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "missing Debian packages; run: sudo apt-get install -y$$need" >&2; exit 1; \
	  fi; \
	  echo "installing Debian packages:$$need"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$need >/dev/null; \
	fi

test-rust: ## Rust unit tests (the engine, without Python).
	cargo test -q --no-default-features

test-python: $(STAMP) build dist ## Python tests against real services: SQLite, PostgreSQL, then MariaDB for DB-specific ones.
	$(BIN)/pytest -q -p no:cacheprovider
	METRICS_TEST_DB=postgres $(BIN)/pytest -q -p no:cacheprovider --ignore=tests/e2e/test_dist.py
	METRICS_TEST_DB=mysql $(BIN)/pytest -q -p no:cacheprovider tests/instrument tests/test_commands.py tests/test_models.py tests/test_health.py

# prometheus_client's own tests, from the sdist of the version pinned in requirements-dev.txt.
PEER_VERSION = $(shell sed -n 's/^prometheus-client==//p' requirements-dev.txt)
PEER_DIR = target/peer/prometheus_client-$(PEER_VERSION)

$(PEER_DIR)/.stamp: requirements-dev.txt $(STAMP)
	rm -rf target/peer && mkdir -p target/peer
	$(BIN)/pip download -q --no-deps --no-binary :all: prometheus-client==$(PEER_VERSION) -d target/peer
	tar xzf target/peer/prometheus_client-$(PEER_VERSION).tar.gz -C target/peer
	touch $@

peer-tests: $(STAMP) build $(PEER_DIR)/.stamp ## prometheus_client's own core and exposition tests, run against our classes.
	cd $(PEER_DIR) && PYTHONPATH=$(abspath tests/peer) $(abspath $(BIN))/pytest -q -p no:cacheprovider \
	  -p peer_redirect --rootdir . -c /dev/null tests/test_core.py tests/test_exposition.py

test: test-rust test-python peer-tests ## The whole suite.

lint: $(STAMP) build ## ruff, mypy, rustfmt, clippy (mypy loads the app, so the core is built first).
	$(BIN)/ruff check python tests bench example dashboards deploy noxfile.py
	$(BIN)/ruff format --check python tests bench example dashboards deploy noxfile.py
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest metrics._core
	cargo fmt --check
	cargo clippy -q --all-targets -- -D warnings

bench: $(STAMP) build-release ## Benchmarks side by side with the anchors (release build).
	@$(MAKE) --no-print-directory system-deps DEBS="$(BENCH_DEBS)"
	$(BIN)/pip install -q -r requirements-bench.txt
	$(BIN)/python bench/core.py
	$(BIN)/python bench/multiprocess.py
	$(BIN)/python bench/http_requests.py
	$(BIN)/python bench/instrument.py
	@$(MAKE) --no-print-directory bench-abi

bench-abi: $(DEMO_STAMP) ## The core built with the stable ABI (abi3) against a per-version build (part of bench).
	# Both built the same way (cargo, release profile), each laid out as a `metrics` package.
	PYO3_PYTHON=$(abspath $(BIN)/python) cargo build -q --release --target-dir target/per-version
	PYO3_PYTHON=$(abspath $(BIN)/python) cargo build -q --release --features abi3 --target-dir target/abi3
	rm -rf target/bench-abi
	for v in per-version abi3; do \
	  mkdir -p target/bench-abi/$$v && cp -r python/metrics target/bench-abi/$$v/ && rm -f target/bench-abi/$$v/metrics/*.so; \
	done
	cp target/per-version/release/lib_core.so target/bench-abi/per-version/metrics/_core$(EXT_SUFFIX)
	cp target/abi3/release/lib_core.so target/bench-abi/abi3/metrics/_core.abi3.so
	$(BIN)/python bench/abi.py

dist: $(DIST_STAMP) ## Build the sdist and the release wheel (one abi3 wheel for CPython 3.10+) into dist/.

$(DIST_STAMP): $(DEMO_STAMP) $(CORE_SRC) $(PACKAGE_SRC) README.md
	rm -rf dist
	$(BIN)/maturin sdist -o dist
	$(BIN)/maturin build --release -o dist
	touch $@

matrix: $(STAMP) dist ## Compatibility tests of the wheel on Python 3.10-3.13 x Django 5.2, 6.0, 6.1 (nox).
	PATH="$(MATRIX_PATH):$$PATH" $(BIN)/nox -f noxfile.py

demo: build ## Run the example site on http://127.0.0.1:8000.
	bash scripts/demo.sh

clean: ## Remove build products and .venv.
	rm -rf target dist .nox $(VENV)
