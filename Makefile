# Darkroom: `make demo` runs the whole loop on this machine; `make test` runs the test suite.
# Both create .venv and install everything on first use (a few minutes), then start at once.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast model bench bench-quick lint clean

install: $(STAMP)

# torch is pinned exactly (the CPU wheel on local disk): any looser pin pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[embedded,train,dev]'
	touch $(STAMP)

demo: install
	$(BIN)/darkroom demo

test: install
	$(BIN)/python -m pytest -q --durations=20

test-fast: install
	$(BIN)/python -m pytest -q -m "not e2e"

model: install
	$(BIN)/darkroom model

bench: install            # the full benchmark: both models, server scenario, scaling; ≤ 12 minutes on 2 quiet cores; results in bench/results/
	$(BIN)/darkroom bench

bench-quick: install      # a small run that keeps the command working (what CI runs)
	$(BIN)/darkroom bench --quick

experiment: install       # the paper's comparison, full run (~25 minutes on 2 cores)
	$(BIN)/darkroom experiment paper --out experiment-out

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check contracts stream search trainer tools tests bench

clean:
	rm -rf run demo-out data .pytest_cache
