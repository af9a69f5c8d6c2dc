# Two commands for a fresh machine: `make demo` (the main job on the embedded default; in a
# terminal, then the explorer serving its ledger) and `make test` (the whole suite, with its own S3 and GCS servers,
# Slurm on 127.0.0.1 and a headless Chromium).
ROOT := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT := false

.PHONY: demo test lint bench mutation docs clean slurm-packages browser-packages

$(VENV)/.core-installed: $(ROOT)pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '$(ROOT)[ui]'
	touch $@

$(VENV)/.dev-installed: $(ROOT)pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '$(ROOT)[dev]'
	touch $@ $(VENV)/.core-installed

# The demo runs in the current directory and prints how to open the explorer; in a terminal it
# then serves the explorer and prints the URL to open (Ctrl-C stops it). UI=serve serves even
# without a terminal, UI=no never. UI_ARGS go to `scalable ui` (e.g. UI_ARGS="--port 0").
UI ?= auto
UI_ARGS ?=
demo: $(VENV)/.core-installed
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) $(ROOT)examples/demo.py --ui=$(UI) $(UI_ARGS)

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

# Chromium and its driver (Debian packages) for the explorer's browser tests: installed once, when
# missing and we are root; elsewhere those tests are skipped with the reason.
browser-packages:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; } || \
	    echo "chromium and chromium-driver could not be installed; the browser tests will be skipped"; \
	  else echo "chromium and chromium-driver are not installed (needs root and apt-get); the browser tests will be skipped"; fi; }

# The suite in TEST_WORKERS processes (each starts its own servers); tests are handed out as
# workers free up, so the long random-workflow tests run beside the rest.
TEST_WORKERS ?= 2
test: $(VENV)/.dev-installed slurm-packages browser-packages
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

lint: $(VENV)/.dev-installed
	$(PY) -m ruff check scalable tests tools
	$(PY) -m ruff format --check scalable tests tools
	$(PY) -m mypy

# Every bench at full size (under 20 minutes on a 2-core machine); BENCH_ARGS=--quick for the
# smaller sizes (under 5 minutes). Prints one JSON object on stdout.
BENCH_ARGS ?=
bench: $(VENV)/.dev-installed
	@$(PY) tools/bench.py all $(BENCH_ARGS)

$(VENV)/.mutation-installed: $(ROOT)pyproject.toml $(VENV)/.dev-installed
	$(PY) -m pip install -q -e '$(ROOT)[mutation]'
	touch $@

# Mutation testing of the core modules (mutmut, two test processes, one module at a time; two to
# three hours for all of them on a 2-core machine). Not part of `make test` or CI. The report goes
# to build/mutation/report.md. MUTATION_ARGS: module names (cache.keys ledger.events), --resume.
MUTATION_ARGS ?=
mutation: $(VENV)/.mutation-installed
	$(PY) tools/mutation.py $(MUTATION_ARGS)

docs: $(VENV)/.dev-installed
	$(PY) -m sphinx -W --keep-going -b html -q docs docs/_build/html

clean:
	rm -rf $(VENV) .scalable demo-output docs/_build build/mutation
