# slimserve developer tasks. `make demo` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
MODELS ?= models
PORT ?= 8000
# Only `make default-model` and `make bench` read these (the data sets and the teacher).
SHARED ?= ../shared
# torch's CPU build. pip prefers 2.13.0+cpu from this index over PyPI's 2.13.0, which
# pulls several GB of CUDA wheels; where the index cannot be reached pip warns and
# takes torch from the other indexes it is configured with.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: demo test test-all check venv variants evaluate bench default-model clean

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q --retries 0 --timeout 20 --extra-index-url $(TORCH_INDEX) "torch==2.13.0"
	touch $@

# What serving and compressing need, no test tools.
$(VENV)/.demo: pyproject.toml $(VENV)/.torch
	$(PIP) install -q -e ".[serve,compress,openvino]"
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.demo
	$(PIP) install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.dev

# build-default writes cascades.json last, so its presence means the whole set is there.
$(MODELS)/cascades.json: $(VENV)/.demo compressor/default/adapter.safetensors
	$(VENV)/bin/compressor build-default --out $(MODELS)

variants: $(MODELS)/cascades.json

# The service prints a curl line once it answers.
demo: variants
	$(PY) -m service --models $(MODELS) --port $(PORT)

test: $(VENV)/.dev
	$(PY) -m pytest -q -m "not slow"

# Also the slow integration tests (processes, fuzzing, Prometheus, compose); CI runs this.
test-all: $(VENV)/.dev
	$(PY) -m pytest -q

# The lint step CI runs (ruff is pinned in the [dev] extra), and the layering
# compressor → variant ← service (import-linter's contracts in pyproject.toml).
check: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# The README's table: every variant under $(MODELS) (and its cascades) on the shipped SST-2 dev set.
evaluate: variants
	$(VENV)/bin/compressor evaluate $(MODELS)/*/ --data compressor/default/sst2-dev.tsv \
		--reference $(MODELS)/original --json reports/default-variants.json

# Benchmarks read the fine-tuned teacher and the data sets under $(SHARED); they print a table and write JSON.
bench: $(VENV)/.dev
	$(PY) benchmarks/teacher.py
	$(PY) benchmarks/methods.py
	$(PY) benchmarks/serve.py

# Retrain the default model's adapter and head (writes compressor/default/adapter.safetensors,
# ADAPTER.md and sst2-calibration.txt); about 25 minutes on 2 cores.
default-model: $(VENV)/.demo
	$(VENV)/bin/compressor train-default --train $(SHARED)/data/sst2/train.tsv --dev $(SHARED)/data/sst2/dev.tsv

clean:
	rm -rf $(VENV) .pytest_cache reports
	find $(MODELS) -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
