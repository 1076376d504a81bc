# The two commands the README opens with:
#   make demo   serve the demo app at http://127.0.0.1:5000 (sessions in SQLite)
#   make test   lint, type-check and run the whole test-suite against real services
# Both start from nothing on Debian with Python 3.11: the first run creates
# .venv and installs what it needs (the demo: the project alone, with Flask and
# msgspec; the tests: the project with its dev group); later runs reuse it
# until pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000
# Extra arguments: make test ARGS="-k redis", make bench ARGS="--quick".
ARGS ?=
LINT_PATHS := src tests examples $(wildcard bench)

# The steps of "make test" depend on each other's order, even under make -j.
.NOTPARALLEL:
.PHONY: venv demo test test-suites services lint bench clean distclean

$(BIN)/python:
	@# Debian ships venv (ensurepip) in a separate package.
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
	  echo "installing python3-venv"; \
	  if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
	$(PYTHON) -m venv $(VENV)

# pip >= 25.1 is needed for --group (PEP 735 dependency groups).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e . --group dev
	touch $@

venv: $(VENV)/.installed

# The demo needs nothing but the project, so its first page is up in seconds;
# its own marker, so that a later "make test" still installs the dev group.
$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	@[ $(VENV)/.installed -nt pyproject.toml ] || $(BIN)/python -m pip install --quiet -e .
	touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/flask --app examples/demo/app.py run --host $(HOST) --port $(PORT)

services:
	bash scripts/ensure-services.sh

lint: venv
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy
	$(BIN)/mypy --strict tests/typing examples/demo/app.py

test: venv services lint
	$(BIN)/pytest $(ARGS)

# Third-party test-suites run against Flask-Satchel (tests marked "suite", which
# "make test" leaves out because they take minutes); CI runs both.
test-suites: venv services
	$(BIN)/pytest -m suite $(ARGS)

# The throughput suite drives gunicorn with wrk, from Debian's packages.
bench: venv services
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1 || { \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }; }
	$(BIN)/python bench/run.py $(ARGS)

# The documentation site (Sphinx, docs/) in docs/_build/html, warnings as errors
# as in CI; its own marker, so that it installs only the docs group.
.PHONY: docs
$(VENV)/.installed-docs: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e . --group docs
	touch $@

docs: $(VENV)/.installed-docs
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	@echo "docs/_build/html/index.html"

# tests/test_packaging.py in full: it also installs the built wheel with its
# extras from PyPI into a clean venv, which "make test" skips as too slow for
# every run; CI runs it after "make test".
.PHONY: test-packaging
test-packaging: venv
	SATCHEL_TEST_PACKAGING=1 $(BIN)/pytest tests/test_packaging.py $(ARGS)

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis examples/demo/instance docs/_build docs/_generated
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
