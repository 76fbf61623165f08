# minillm: `make course` runs the chapters, `make test` runs every test. Both build .venv first.
#
# torch is installed on its own, before anything that depends on it, so that pip does not pull
# a multi-GB CUDA build onto a CPU-only machine. Override TORCH for another build, e.g.
#   make test TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

export PATH := $(abspath $(BIN)):$(PATH)
export PYTHONHASHSEED := 0
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: all venv test test-package test-chapters course lab lint clean

all: test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests --nbval-lax chapters $(PYTEST_ARGS)

test-package: $(STAMP)
	$(BIN)/python -m pytest -q tests $(PYTEST_ARGS)

test-chapters: $(STAMP)
	$(BIN)/python -m pytest -q --nbval-lax chapters $(PYTEST_ARGS)

course: $(STAMP)
	$(BIN)/minillm course run --output-dir build/course

lab: $(STAMP)
	$(BIN)/jupyter lab chapters/

lint: $(STAMP)
	$(BIN)/ruff check minillm tests benchmarks data

clean:
	rm -rf build .pytest_cache
