# Two commands set everything up on a fresh machine:
#   make demo   — the main job (import, embed, index, evaluate, report) on the embedded database
#   make test   — the test suite against a real embedded PostgreSQL + pgvector
# Override TORCH_SPEC for your platform, e.g. make test TORCH_SPEC="torch torchvision" (CUDA/ROCm builds).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1

.PHONY: install test demo bench bench-full lint docs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[test,bench,weights,dicom]"
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q

demo: $(VENV)/.installed
	$(VENV)/bin/cbir-pg demo

bench: $(VENV)/.installed
	$(PY) -m bench.run

bench-full: $(VENV)/.installed
	$(PY) -m bench.run --full

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(PY) -m tools.docgen --check

docs: $(VENV)/.installed
	$(PY) -m tools.docgen

clean:
	rm -rf $(VENV) build dist *.egg-info
