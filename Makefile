# Two set-up commands: `make demo` and `make test`. Both create .venv on first use.
# On machines without an NVIDIA GPU torch is pinned to the CPU wheel in the same install as
# everything else (an unpinned torch would pull a multi-GB CUDA build); with a GPU the `gpu`
# extra adds torchvision and torch comes from the usual index.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)
UNAME_S := $(shell uname -s)
# A local wheel folder (pip's PIP_FIND_LINKS) that already holds the CPU build needs no index.
LOCAL_CPU_TORCH := $(firstword $(wildcard $(addsuffix /torch-2.13.0+cpu-*.whl,$(subst :, ,$(PIP_FIND_LINKS)))))
ifeq ($(HAS_GPU),yes)
TORCH_SPEC :=
EXTRAS := dev,gpu
PIP_INDEX :=
else ifeq ($(UNAME_S),Darwin)
TORCH_SPEC := torch==2.13.0
EXTRAS := dev
PIP_INDEX :=
else
# Linux without a GPU: PyPI's torch is the CUDA build (several GB); take the CPU build.
TORCH_SPEC := torch==2.13.0+cpu
EXTRAS := dev
PIP_INDEX := $(if $(LOCAL_CPU_TORCH),,--extra-index-url https://download.pytorch.org/whl/cpu)
endif

export HF_HUB_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint format bench clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(PIP_INDEX) $(TORCH_SPEC) -e ".[$(EXTRAS)]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/vlm-retain demo --out demo-out --overwrite

test: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(VENV)/.installed
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/bench_import.py
	$(BIN)/python benchmarks/bench_metrics.py
	$(BIN)/python benchmarks/bench_synth.py
	$(BIN)/python benchmarks/bench_eval_cpu.py
	$(BIN)/python benchmarks/bench_gpu.py --shape tiny --device cpu --quiet \
		--out $${TMPDIR:-/tmp}/vlm-retain-bench-gpu-tiny.json

clean:
	rm -rf $(VENV) demo-out .pytest_cache .ruff_cache
