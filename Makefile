# `make test`, `make lint` and `make demo` each build .venv from nothing when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-slow lint demo bench bench-real clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,lint]'
	touch $(STAMP)

test: $(STAMP)
	HYPOTHESIS_PROFILE=ci $(PY) -m pytest -n 2 -q

test-slow: $(STAMP)
	HYPOTHESIS_PROFILE=ci $(PY) -m pytest -q -m slow

# ruff over everything (tests and benchmarks too); mypy over the library packages
# (pyproject.toml's [tool.mypy]: strict on frontends/, default mode elsewhere).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

demo: $(STAMP)
	$(VENV)/bin/darkslim demo

bench: $(STAMP)
	for b in benchmarks/*.py; do [ $$b = benchmarks/real.py ] || $(PY) $$b || exit 1; done

# The seed's table on real photos (needs ../shared): ~1 h on a 2-core CPU.
bench-real: $(STAMP)
	rm -rf build/real
	$(PY) benchmarks/real.py --out build/real --json build/real/real.json --readme

clean:
	rm -rf $(VENV) build *.egg-info
