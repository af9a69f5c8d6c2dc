# Two commands for a fresh machine: `make demo` (the main job on the embedded default) and
# `make test` (the whole suite, with its own S3 and GCS servers on 127.0.0.1).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT := false

.PHONY: demo test lint bench docs clean

$(VENV)/.core-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.core-installed

demo: $(VENV)/.core-installed
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) examples/demo.py

test: $(VENV)/.dev-installed
	$(PY) -m pytest -q

lint: $(VENV)/.dev-installed
	$(PY) -m ruff check scalable tests tools
	$(PY) -m mypy

# Every bench at full size (under 20 minutes on a 2-core machine); BENCH_ARGS=--quick for the
# smaller sizes (under 5 minutes). Prints one JSON object on stdout.
BENCH_ARGS ?=
bench: $(VENV)/.dev-installed
	@$(PY) tools/bench.py all $(BENCH_ARGS)

docs: $(VENV)/.dev-installed
	$(PY) -m sphinx -W --keep-going -b html -q docs docs/_build/html

clean:
	rm -rf $(VENV) .scalable demo-output docs/_build
