# kubeinfer developer entry points. Heavy downloads and builds are cached under $(CACHE).
SHELL := /bin/bash
CACHE ?= $(HOME)/.cache/kubeinfer
VENV := .venv
PY := $(VENV)/bin/python
export UV_CACHE_DIR := $(CACHE)/uv
export UV_LINK_MODE := hardlink
export PYTHONPATH := tests

.PHONY: help venv demo test test-unit test-runtime test-e2e lint crds docs docs-serve tools dev-cluster dev-cluster-down bench clean bench-scale \
	bench-admission bench-model-load bench-items bench-textgen bench-threads bench-rank-start images

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# Compiled bytecode: with PYTHONDONTWRITEBYTECODE set, or a pod's uid unable to write into the venv, every
# process would compile torch, transformers and diffusers from source again (a Flux rank's imports 10 s, not 5).
# hack/venv.sh hard-links a compiled template from the cache and leaves triton out where there is no GPU.
$(VENV)/.stamp: pyproject.toml hack/gpu-only-packages.txt hack/venv.sh
	bash hack/venv.sh
	@touch $@

venv: $(VENV)/.stamp  ## create .venv (cached wheels, hard-linked)

demo: venv  ## build a tiny model and run a 2-process data-parallel job locally
	$(VENV)/bin/kubeinfer demo

tools:  ## build the pinned control plane, etcd, helm, MinIO and Kueue (cached)
	bash hack/build-tools.sh

images:  ## build both images with buildah from Debian bases, no Docker engine (root; cached)
	bash hack/build-images.sh

# The venv's downloads and the tools' compiles overlap on a cold machine; both are no-ops when warm.
test:  ## the whole suite: lint beside unit, runtime and e2e on xdist workers sharing one cluster
	@$(MAKE) --no-print-directory -j2 venv tools
	bash hack/test.sh

test-unit: venv tools  ## lint-free fast tests: API, builders, policies, chart (helm)
	$(PY) -m pytest tests/unit

test-runtime: venv tools  ## multi-process torch.distributed on CPU, storage against MinIO
	$(PY) -m pytest tests/runtime

test-e2e: venv tools  ## the real control plane, node agents, operator installed by helm
	$(PY) -m pytest tests/e2e

lint: venv  ## ruff and mypy (the CRD drift check is a unit test)
	$(VENV)/bin/ruff check api operator runtime tests bench
	$(VENV)/bin/mypy

crds: venv  ## regenerate crds/, the chart's copy and docs/reference/fields.md from the pydantic models
	$(PY) -m kubeinfer_api.crd --write
	$(PY) -m kubeinfer_api.reference --write

docs: venv  ## regenerate docs/reference/fields.md, then build the docs site with --strict into site/
	$(PY) -m kubeinfer_api.reference --write
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

docs-serve: venv  ## serve the docs site with live reload on http://127.0.0.1:8000
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

dev-cluster: venv tools  ## start a local control plane, node agent, S3 server and the operator
	$(PY) -m localcluster up

dev-cluster-down:
	$(PY) -m localcluster down

bench: venv  ## runtime overhead and upload-overlap benchmarks
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) outputs site .pytest_cache .mypy_cache .ruff_cache

bench-scale: venv  ## 1,000 jobs: kubeinfer-operator vs the JobSet controller on a local control plane
	bash hack/build-tools.sh kubernetes etcd jobset
	$(PY) bench/operator_scale.py $(SCALE_ARGS)

bench-admission: venv  ## quota freed -> all pods bound under Kueue: kubeinfer vs JobSet, as a ratio
	bash hack/build-tools.sh kubernetes etcd jobset kueue
	$(PY) bench/admission_latency.py $(ADMISSION_ARGS)

bench-model-load: venv  ## model fetch + load vs the best plain S3 client and vs cat (MinIO here, ~2 GB)
	bash hack/build-tools.sh minio
	$(PY) bench/model_load.py $(MODEL_LOAD_ARGS)

bench-items: venv  ## 10^4 and 10^6 items with an echo stand-in model: items/s, requests per item, RSS, resume, finalize
	bash hack/build-tools.sh minio
	$(PY) bench/items_scale.py $(ITEMS_ARGS)

bench-threads: venv  ## a CPU worker's threads: the operator's OMP_NUM_THREADS vs torch's default, quiet and busy
	$(PY) bench/cpu_threads.py $(THREADS_ARGS)

bench-rank-start: venv  ## rank start on CPU: torchrun (exec'd ranks) vs kubeinfer's launcher (forked ranks)
	$(PY) bench/rank_start.py $(RANK_START_ARGS)

bench-textgen: venv  ## text generation tokens/s, batchSize 8 vs 1 on the tiny LM (CPU)
	$(PY) bench/textgen_batching.py $(TEXTGEN_ARGS)
