# slimserve developer tasks. `make demo` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODELS ?= models
PORT ?= 8000
SST2 ?= ../shared/data/sst2

.PHONY: demo test venv variants evaluate bench default-head clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

$(MODELS)/svd-50-int8/variant.json: $(VENV)/.installed
	$(VENV)/bin/compressor build-default --out $(MODELS)

variants: $(MODELS)/svd-50-int8/variant.json

demo: variants
	@echo
	@echo "slimserve on http://127.0.0.1:$(PORT) — try, from another shell:"
	@echo "  curl -s localhost:$(PORT)/v1/models/original/classify -H 'content-type: application/json' \\"
	@echo "       -d '{\"inputs\": [\"it'\"'\"'s a charming and often affecting journey.\"]}'"
	@echo
	$(PY) -m service --models $(MODELS) --port $(PORT)

test: venv
	$(PY) -m pytest -q

# The README's table: every default variant on SST-2 dev, against the original.
evaluate: variants
	$(VENV)/bin/compressor evaluate $(MODELS)/original $(MODELS)/svd-50 $(MODELS)/int8 $(MODELS)/svd-50-int8 \
		--data $(SST2)/dev.tsv --reference $(MODELS)/original --json reports/default-variants.json

# Benchmarks need ../shared (the fine-tuned teacher and SST-2); they print a table and write JSON.
bench: venv
	$(PY) benchmarks/teacher.py
	$(PY) benchmarks/methods.py
	$(PY) benchmarks/serve.py

# Refit the default model's head (writes compressor/default/head.safetensors and HEAD.md).
default-head: venv
	$(VENV)/bin/compressor fit-default-head --train $(SST2)/train.tsv --dev $(SST2)/dev.tsv

clean:
	rm -rf $(VENV) .pytest_cache reports
	find $(MODELS) -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
