# The README's two commands: `make demo` and `make test`. Both create .venv when needed.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= demo-output
PYTEST_ARGS ?=

.PHONY: install assets demo test lint bench clean

install:
	bash tools/install.sh

assets: install
	$(VENV)/bin/anycharv assets fetch

demo: assets
	$(PY) tools/demo.py --out $(DEMO_OUT)

test: assets
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

bench: assets
	$(PY) benchmarks/preprocess.py --out benchmarks/results/preprocess-cpu.json
	$(PY) benchmarks/inference.py --out benchmarks/results/inference-cpu.json
	$(PY) benchmarks/loader.py --out benchmarks/results/loader-cpu.json
	$(PY) benchmarks/train_step.py --out benchmarks/results/train-step-cpu.json
	$(PY) benchmarks/batch.py --out benchmarks/results/batch-cpu.json
	$(PY) benchmarks/cli_startup.py --out benchmarks/results/cli-startup-cpu.json

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
