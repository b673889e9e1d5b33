# Two commands a new user needs: `make train` and `make test`. Both create .venv once
# and reuse it; pip's cache makes a reinstall fast.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CONFIG ?= configs/fashion.yaml

# Offline machines that keep the datasets beside the checkout (see README) use them.
ifeq ($(origin MLPTRAIN_DATA_SOURCE), undefined)
ifneq ($(wildcard ../shared/datasets),)
export MLPTRAIN_DATA_SOURCE := ../shared/datasets
endif
endif

.PHONY: install tools train test test-all docs reference reproduce mutate lint format clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

# Debian packages the tests use, installed here (never downloaded by a test): Chromium
# and chromedriver for the browser test of mlp-serve's page, wrk for the serving benchmark.
TOOLS := chromium chromedriver wrk
PACKAGES := chromium chromium-driver wrk
tools:
	@missing=""; for tool in $(TOOLS); do command -v $$tool >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q $(PACKAGES) || \
	      { apt-get update -q && apt-get install -y -q $(PACKAGES); }; \
	  else \
	    echo "make tools: not root; run sudo apt-get install $(PACKAGES)" \
	      "(without them their tests are skipped here, and fail in CI)"; \
	  fi; \
	fi

train: $(STAMP)
	$(BIN)/mlp-train --config $(CONFIG)

# Two tiers (docs/development.md): `make test` is every module's behaviour, on both cores,
# in a few minutes; `make test-all` (CI) adds the tests marked slow: real servers, killed
# machines, the wheel, benchmark quick modes, long trainings. One file or one test:
#   .venv/bin/python -m pytest tests/test_config.py::test_defaults_validate
# Two workers, each a module at a time (its module fixtures built once); one torch thread
# per process, so that two workers and the processes their tests start do not fight over
# the two cores (37 s against 24 s for the same slow tests, measured).
PYTEST_PARALLEL ?= -n 2 --dist loadscope
PYTEST_ENV ?= OMP_NUM_THREADS=1

test: $(STAMP) tools
	$(PYTEST_ENV) $(BIN)/python -m pytest $(PYTEST_PARALLEL) -m "not slow"

test-all: $(STAMP) tools
	$(PYTEST_ENV) $(BIN)/python -m pytest $(PYTEST_PARALLEL)

# The documentation site, strict (a broken link or a page missing from the navigation is an
# error), into site/ (git-ignored); the reference pages are written from the code first.
docs: $(STAMP)
	$(BIN)/python scripts/make_reference.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

reference: $(STAMP)
	$(BIN)/python scripts/make_reference.py

# Every recipe and preset, 3 seeds each (about 1.5 h on 2 cores): docs/results.md.
reproduce: $(STAMP)
	$(BIN)/python scripts/reproduce.py $(ARGS)

# Mutation testing of the fast-tested modules (pyproject's [tool.mutmut]); not in CI:
# about 10 minutes here. The score and the survivors: docs/development.md.
mutate: $(STAMP)
	rm -rf mutants
	$(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean-venv:
	rm -rf $(VENV)
