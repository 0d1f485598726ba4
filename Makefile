# succu: `make fit` and `make test` each create .venv and install on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  := torch==2.13.0
# One OpenMP thread per process: on a shared 2-core box two threads can run ~10x slower.
THREADS ?= 1
export OMP_NUM_THREADS := $(THREADS)
export WANDB_MODE ?= offline
export HF_DATASETS_OFFLINE ?= 1
export HF_HUB_OFFLINE ?= 1

.DEFAULT_GOAL := help
.PHONY: help install fit fit-prepared test test-all lint bench study clean

# The speed benches: every bench/*.py but the shared helpers (bench/_*.py). The research studies
# live in studies/ and run one at a time with `make study`.
BENCHES := $(filter-out bench/_%,$(sort $(wildcard bench/*.py)))
STUDIES := $(filter-out runner,$(basename $(notdir $(filter-out studies/_%,$(wildcard studies/*.py)))))

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev,serve-test,export-test]"
	touch $@

install: $(VENV)/.installed  ## create .venv and install succu (torch pinned first, CPU wheel)

fit: install  ## train the default SuccuLM (configs/succulm.yaml) and talk to it
	$(PY) -m succu.fit

fit-prepared: install  ## the sophia trap as the article set it up: stage 1 (sophia a character) writes succulm_embeddings.json, stage 2 starts from it
	$(PY) -m succu.fit --config configs/succulm_stage1.yaml
	$(PY) -m succu.fit --config configs/succulm_stage2.yaml

test: lint  ## ruff, then the default test suite (no slow tests), under 10 minutes on 2 cores
	$(PY) -m pytest -q

test-all: install  ## every test, slow ones included
	$(PY) -m pytest -q -m ""

lint: install  ## ruff
	$(PY) -m ruff check succu datamodules callbacks tests bench studies

bench: install  ## the speed benches in bench/, each printing its ratio against a same-run baseline (minutes); NANOGPT=DIR adds vs_nanogpt.py and gpu.py's nanoGPT side
	@for b in $(BENCHES); do \
	  args=""; if [ $$b = bench/vs_nanogpt.py ]; then \
	    if [ -z "$(NANOGPT)" ]; then echo "== $$b skipped (needs a nanoGPT checkout: make bench NANOGPT=DIR)"; continue; fi; \
	    args="$(NANOGPT)"; fi; \
	  if [ $$b = bench/gpu.py ] && [ -n "$(NANOGPT)" ]; then args="--nanogpt $(NANOGPT)"; fi; \
	  echo "== $$b"; $(PY) $$b $$args || exit 1; done

study: install  ## one research study (hours, resumable; pages in studies/results/): make study STUDY=dial|hypersurface|noiselm|sophia_trap [ARGS="--jobs 2"]
	@case " $(STUDIES) " in *" $(STUDY) "*) ;; *) echo "make study STUDY=NAME [ARGS=...]: NAME is one of $(STUDIES)"; exit 2;; esac
	$(PY) -m studies.$(STUDY) $(ARGS)

clean:  ## remove run directories and caches (keeps .venv)
	rm -rf runs lightning_logs .pytest_cache
