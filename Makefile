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

.PHONY: install train test reproduce mutate lint format clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/mlp-train --config $(CONFIG)

test: $(STAMP)
	$(BIN)/python -m pytest

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
