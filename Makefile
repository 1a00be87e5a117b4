# The two commands of the README's Quickstart. Each makes .venv on first use: torch's CPU build first
# (a bare "torch" requirement would pull multi-GB CUDA wheels), then the project with its test extra.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench-engine

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python -m jobs.demo

test: $(BIN)/.installed
	$(BIN)/python -m ruff check .
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -ra

lint: $(BIN)/.installed
	$(BIN)/python -m ruff check .
