# The two commands a new user runs: `make demo` and `make test` (see README.md).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME := $(CURDIR)/.prefect
export MPLBACKEND := Agg

.PHONY: demo test bench env clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/make_demo_corpus.py --out data/demo-audio
	$(BIN)/audioprep run catalog.yaml --workers 2

test: $(STAMP)
	$(BIN)/python -m pytest -q

BENCH_STAMP := $(VENV)/.installed-bench

# torch first, pinned: lhotse would otherwise pull a CUDA build of several GB (field-notes.md)
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet 'torch==2.13.0'
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run_all

clean:
	rm -rf data .prefect .pytest_cache
