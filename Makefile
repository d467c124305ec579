# playworld: the two commands a new user needs are `make play` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup play test test-slow lint bench clean

# Create .venv from nothing. torch is pinned and installed first so pip never resolves a
# CUDA build on CPU machines; the project's own `torch>=...` range is then already met.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[serve,eval,dev]"
	touch $(STAMP)

setup: $(STAMP)

## The main job: play the bundled world in your browser (http://127.0.0.1:8000).
play: setup
	$(VENV)/bin/playworld play

## The tests (fast: slow end-to-end tests are marked and skipped; see test-slow).
test: setup
	$(PY) -m pytest -q

## Slow end-to-end tests (train tiny models, minutes).
test-slow: setup
	$(PY) -m pytest -q -m slow

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
