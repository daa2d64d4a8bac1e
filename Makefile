# gpen-lightning developer commands. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# extras `make install` installs; .ci/run adds identity (dlib) so its tests run instead of skipping
EXTRAS ?= dev,serve
# one stamp per set of extras: other EXTRAS on an existing .venv install what they add
STAMP := $(VENV)/.installed-$(EXTRAS)

.PHONY: help install demo train test test-all lint format bench bench-quick gpu-check docs clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 12

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the package (editable; EXTRAS=dev,serve by default); idempotent

demo: install  ## the web app (stage=serve) on http://127.0.0.1:7860; ARGS= adds overrides (weights=PATH)
	$(PY) -m gpen_lightning stage=serve $(ARGS)

train: install  ## pre-train a tiny GPEN prior on synthetic faces (2-core CPU: minutes); ARGS= adds overrides
	$(PY) -m gpen_lightning stage=prior $(ARGS)

lint: install  ## ruff lint + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install  ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint  ## lint, then the fast test suite (no slow, no gpu)
	$(PY) -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

test-all: lint  ## every test, slow ones included (gpu tests skip without CUDA)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install  ## benchmark suite (inference, training img/s, degradation) -> benchmarks/results/; restoration faces/s, video frames/s
	$(PY) benchmarks/suite.py
	$(PY) benchmarks/restore.py
	$(PY) benchmarks/video.py

bench-quick: install  ## the suite on tiny presets, one repeat (what CI runs; no timing asserts)
	$(PY) benchmarks/suite.py --quick --out $${OUT:-/tmp/gpen-bench-quick}

gpu-check:  ## on a GPU machine: gpu tests + benchmarks -> OUT (PART=budget: all in one 8-min call, results.jsonl; tests|train|official|infer|all|faces128; quick-cpu: CPU dry run)
	bash benchmarks/gpu_check.sh $${PART:-all}

docs: install  ## build the docs site (strict) -> site/
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist site
