# mmfusion developer commands. Every target creates .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-all

export HF_HUB_OFFLINE := 1

.PHONY: help install test lint docs train bench fusion-cost fusion-bench ablation clean

help:
	@echo "make test   - install (.venv) and run ruff + the test suite"
	@echo "make train  - train the liver fibrosis example on the embedded phantom into runs/"
	@echo "make docs   - build the Sphinx docs (warnings are errors) into docs/_build/html"
	@echo "make bench  - throughput benchmark (GPU if present, else the quick CPU mode)"
	@echo "make fusion-cost - cost of every fusion method on this CPU (benchmarks/results)"
	@echo "make fusion-bench - the fusion benchmark of issue 28 (resumable, about 2 h on 2 cores)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[all]"
	@touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check src tests examples benchmarks docs

test: lint
	$(PY) -m pytest -q -n 2 --dist loadgroup

docs: $(STAMP)
	rm -rf docs/_build/html
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

train: $(STAMP)
	$(PY) -m examples.liver_fibrosis.train --out runs/liver_fibrosis

ablation: $(STAMP)
	$(PY) -m examples.liver_fibrosis.ablation --out runs/ablation

bench: $(STAMP)
	$(PY) -m benchmarks.throughput --overwrite

fusion-cost: $(STAMP)
	$(PY) -m benchmarks.fusion_cost

fusion-bench: $(STAMP)
	$(PY) -m benchmarks.fusion_bench

clean:
	rm -rf docs/_build .pytest_cache .ruff_cache .hypothesis
