# The commands of the project. `make test` and `make serve` are all a new machine needs.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: install test test-fast lint format bench-model clean

install: $(STAMP)

# torch first and pinned: 2.13.0 is a local CPU wheel here; an unpinned torch would
# pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[train,serve,bench,dev]'
	touch $(STAMP)

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench-model: install
	$(PY) bench/model_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
