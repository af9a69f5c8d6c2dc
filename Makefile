# Two commands for a fresh machine: `make demo` (the main job on the embedded default) and
# `make test` (the whole suite, with its own S3 and GCS servers and Slurm on 127.0.0.1).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT := false

.PHONY: demo test lint bench docs clean slurm-packages

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

# Slurm and munge (Debian packages) for the tests that run jobs: installed once, when missing
# and we are root; elsewhere those tests are skipped with the reason.
slurm-packages:
	@PATH="$$PATH:/usr/sbin:/sbin"; \
	command -v sbatch >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 && command -v munged >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1; } || \
	    echo "slurm-wlm and munge could not be installed; the Slurm tests will be skipped"; \
	  else echo "slurm-wlm and munge are not installed (needs root and apt-get); the Slurm tests will be skipped"; fi; }

test: $(VENV)/.dev-installed slurm-packages
	$(PY) -m pytest -q

lint: $(VENV)/.dev-installed
	$(PY) -m ruff check scalable tests tools
	$(PY) -m ruff format --check scalable tests tools
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
