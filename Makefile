# flowdispatch developer commands (GNU make).
#
#   make demo    run the demo workflow; writes demo.svg and demo-run.svg here
#   make test    run the test suite (doctests of the package included)
#
# Both create the virtualenv .venv (and install Graphviz's `dot` with apt-get
# when it is missing) the first time; `make test` also installs Chromium and
# its driver with apt-get when they are missing (the notebooks and the docs
# are checked in a real browser). Needs only python3 to start from.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.flowdispatch-installed
DOCS_STAMP := $(VENV)/.flowdispatch-docs-installed
PYTEST_ARGS ?=
# compat: a path in a .pth file, which mypy and pyright follow (setuptools'
# default editable mode installs an import hook that type checkers cannot see).
EDITABLE := --config-settings editable_mode=compat -e

# Root needs no sudo; others use it when it exists.
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo 2>/dev/null)
APT_GET := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get

.DEFAULT_GOAL := help
.PHONY: help venv dot browser demo test bench chaos docs clean distclean

help:
	@echo "make demo       run the demo workflow (writes demo.svg, demo-run.svg)"
	@echo "make test       run the test suite"
	@echo "make venv       create $(VENV) and install flowdispatch with its test extras"
	@echo "make dot        install Graphviz's dot with apt-get if it is missing"
	@echo "make browser    install Chromium and chromedriver with apt-get if they are missing"
	@echo "make bench      run benchmarks/run.py"
	@echo "make chaos      flowdispatch next to raw dask on a cluster whose workers are killed (minutes)"
	@echo "make docs       build the HTML docs (when docs/conf.py exists)"
	@echo "make clean      remove build and test leftovers (make distclean: also $(VENV))"

# -- the virtualenv -------------------------------------------------------------
venv: $(STAMP)

# Debian's python3 lacks ensurepip until python3-venv is installed.
$(BIN)/python:
	@if ! $(PYTHON) -m venv $(VENV); then \
	    echo "'$(PYTHON) -m venv' failed; installing python3-venv with apt-get"; \
	    rm -rf $(VENV); \
	    command -v apt-get >/dev/null 2>&1 || { echo "error: install the venv module for $(PYTHON), then run make again" >&2; exit 1; }; \
	    $(APT_GET) update && $(APT_GET) install -y python3-venv && $(PYTHON) -m venv $(VENV); \
	fi

# Reinstalls only when the packaging files change (the stamp lives in the venv,
# so a new venv always installs).
$(STAMP): setup.cfg setup.py pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install $(EDITABLE) '.[test]'
	@touch $@

# -- Graphviz ---------------------------------------------------------------------
dot:
	@if ! command -v dot >/dev/null 2>&1; then \
	    if ! command -v apt-get >/dev/null 2>&1; then \
	        echo "error: Graphviz's 'dot' is not on PATH; install Graphviz with your package manager" >&2; \
	        exit 1; \
	    fi; \
	    echo "Graphviz's 'dot' is not on PATH; installing graphviz with apt-get"; \
	    $(APT_GET) update && $(APT_GET) install -y graphviz; \
	fi

# -- a browser for the tests ------------------------------------------------------
# Debian's packages: the tests drive them with Selenium (from the test extras).
browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
	    if ! command -v apt-get >/dev/null 2>&1; then \
	        echo "warning: Chromium or chromedriver is not on PATH; the browser tests will be skipped" >&2; \
	        exit 0; \
	    fi; \
	    echo "Chromium or chromedriver is not on PATH; installing them with apt-get"; \
	    $(APT_GET) update && $(APT_GET) install -y chromium chromium-driver; \
	fi

# -- the two commands ----------------------------------------------------------------
demo: venv dot
	$(BIN)/flowdispatch demo --executor dask -o demo.svg

test: venv dot browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# -- the rest ---------------------------------------------------------------------------
bench: venv
	$(BIN)/python benchmarks/run.py --sizes 1000,10000,100000,1000000 --memory 100000,1000000 --dask --out benchmarks/RESULTS.md

# Real CLI-started clusters on 127.0.0.1, a worker SIGKILLed every few seconds;
# not part of `make test`. CHAOS_ARGS="--workloads 20x100@5 --timeout 120" for a short one.
CHAOS_ARGS ?=
chaos: venv
	$(BIN)/python benchmarks/chaos.py $(CHAOS_ARGS)

$(DOCS_STAMP): setup.cfg $(STAMP)
	$(BIN)/python -m pip install $(EDITABLE) '.[test,docs]'
	@touch $@

docs: venv $(DOCS_STAMP)
	$(BIN)/sphinx-build -W -b html docs docs/_build/html

clean:
	rm -rf build dist *.egg-info .pytest_cache .hypothesis docs/_build dask-worker-space
	rm -f demo.svg demo-run.svg
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
