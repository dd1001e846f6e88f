# The two Quickstart commands. Both create .venv on first use and are safe to re-run:
# the venv is rebuilt only when pyproject.toml changes.
#   make up    set everything up and run `facerank up --demo` (UP_ARGS= for no demo)
#   make test  set everything up and run the linters and the test suite in strict mode: a test
#              that would skip for a missing part fails (PYTEST_ARGS="--order reverse" etc.),
#              on PYTEST_WORKERS pytest-xdist workers (2; 0 runs it in this one process), each
#              handed whole modules, so a module's shared servers start once. --order reverse
#              then reverses the order modules are handed out in and the tests within each.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.installed-runtime
TEST_STAMP := $(VENV)/.installed-test
PIP := $(BIN)/python -m pip --disable-pip-version-check

UP_ARGS ?= --demo
PYTEST_ARGS ?=
PYTEST_WORKERS ?= 2

.PHONY: up test lint setup setup-test clean

up: $(RUNTIME_STAMP)
	$(BIN)/facerank up $(UP_ARGS)

test: $(TEST_STAMP) lint
	FACERANK_TEST_STRICT=1 $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

setup: $(RUNTIME_STAMP)
setup-test: $(TEST_STAMP)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "facerank needs Python >= 3.11 (found: $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(RUNTIME_STAMP): pyproject.toml | $(BIN)/python
	$(PIP) install --quiet --editable .
	@# The pretrained descriptor needs npm and the registry once; without them, lbp-v0 serves.
	$(BIN)/facerank models fetch || \
	  echo "facerank: pretrained descriptor not set up (see above); using lbp-v0 until \`$(BIN)/facerank models fetch\` succeeds"
	touch $@

# The suite runs strict, so everything a test needs is set up here, and a failure stops setup:
# the pretrained model (again, now fatal), face-api's JavaScript (the reference for the Keras
# ports) and the distribution's Chromium for the browser test (apt-get when root; otherwise
# install it yourself, or run pytest without FACERANK_TEST_STRICT and that test skips).
$(TEST_STAMP): pyproject.toml tests/js/package-lock.json $(RUNTIME_STAMP)
	$(PIP) install --quiet --editable '.[test]'
	$(BIN)/facerank models fetch
	npm ci --prefix tests/js --ignore-scripts --no-audit --no-fund
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ]; then \
	  apt-get update && apt-get install -y chromium chromium-driver; \
	fi
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
