# The two commands a new user runs: `make demo` and `make test` (see README.md).
#
# Two test environments, both run by .ci/run:
#   make test         Python 3.11 (.venv), every dependency at its declared lower bound
#                     (constraints/oldest.txt), then ruff.
#   make test-latest  Python 3.13 (.venv-latest), the newest release of every dependency
#                     (pip's resolver, no constraints file), then ruff.
# Provenance across that range: librosa 1.0 changed defaults; our features pass every
# parameter explicitly and must still equal librosa called directly with the same
# parameters (tests/test_features_librosa.py) in both environments. Each committed
# version records the library versions that computed it (pipeline/run/commit.py).
# Python 3.11, the oldest supported: python3.11 where there is one, else python3.
PY ?= $(shell command -v python3.11 2>/dev/null || echo python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OLDEST := constraints/oldest.txt

# The newest Python: pyenv's 3.13.0 where pyenv has it, else python3.13 on PATH.
# Override with e.g. `make test-latest PY_LATEST=/usr/bin/python3.14`.
PY_LATEST ?= python3.13
VENV_LATEST ?= .venv-latest
BIN_LATEST := $(VENV_LATEST)/bin
STAMP_LATEST := $(VENV_LATEST)/.installed

LINT_PATHS := pipeline flows audioprep tests bench scripts examples
# two test processes (pytest-xdist): the slowest tests mostly wait on servers and subprocesses.
# --dist loadfile: a test file runs in one process, so each module fixture (a namespace cluster,
# a SLURM cluster, a flow run) is built once, not once in each process at the same time.
PYTEST_ARGS ?= -q -p no:randomly -n 2 --dist loadfile

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME := $(CURDIR)/.prefect
export MPLBACKEND := Agg

.PHONY: demo test test-latest lint bench env env-latest clean

$(STAMP): pyproject.toml $(OLDEST)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c $(OLDEST) -e '.[dev]'
	touch $(STAMP)

$(STAMP_LATEST): pyproject.toml
	test -x $(BIN_LATEST)/python || PYENV_VERSION=3.13.0 $(PY_LATEST) -m venv $(VENV_LATEST) \
		|| $(PY_LATEST) -m venv $(VENV_LATEST)
	$(BIN_LATEST)/pip install --quiet --upgrade pip
	$(BIN_LATEST)/pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev]'
	touch $(STAMP_LATEST)

env: $(STAMP)

env-latest: $(STAMP_LATEST)

demo: $(STAMP)
	$(BIN)/python scripts/make_demo_corpus.py --out data/demo-audio
	$(BIN)/audioprep run catalog.yaml --workers 2

# pytest first (its summary stays visible), then ruff; fails if either fails.
test: $(STAMP)
	@$(BIN)/python -c 'import sys; print("make test:", sys.version.split()[0], "(constraints/oldest.txt)")'
	status=0; $(BIN)/python -m pytest $(PYTEST_ARGS) || status=$$?; \
		$(BIN)/ruff check --output-format concise $(LINT_PATHS) || status=$$?; exit $$status

# Its own PREFECT_HOME: a newer Prefect migrates the local database past what 3.8 can open.
test-latest: $(STAMP_LATEST)
	@$(BIN_LATEST)/python -c 'import sys; print("make test-latest:", sys.version.split()[0], "(newest releases)")'
	status=0; PREFECT_HOME=$(CURDIR)/.prefect-latest $(BIN_LATEST)/python -m pytest $(PYTEST_ARGS) || status=$$?; \
		$(BIN_LATEST)/ruff check --output-format concise $(LINT_PATHS) || status=$$?; exit $$status

lint: $(STAMP)
	$(BIN)/ruff check --output-format concise $(LINT_PATHS)

BENCH_STAMP := $(VENV)/.installed-bench

# torch first, pinned: lhotse would otherwise pull a CUDA build of several GB
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet 'torch==2.13.0'
	$(BIN)/pip install --quiet -c $(OLDEST) -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run_all

clean:
	rm -rf data .prefect .prefect-latest .pytest_cache
