# Two commands set everything up on a fresh machine:
#   make demo   — the main job (import, embed, index, evaluate, report) on the embedded database
#   make test   — the test suite against a real embedded PostgreSQL + pgvector
# torch: TORCH_SPEC pins the versions (also the worker Dockerfile's). TORCH_BUILD picks the build:
#   auto (default): no NVIDIA GPU here (no nvidia-smi) and the CPU index answers -> the CPU wheels from
#                   TORCH_CPU_INDEX (a venv ~5 GB smaller); otherwise the default index's build (PyPI's
#                   Linux wheels are CUDA builds; they run on CPU too)
#   cpu:            always the CPU index;   pypi: always the default index
# Any other build: make test TORCH_SPEC="torch torchvision" TORCH_BUILD=pypi (CUDA/ROCm indexes via PIP_INDEX_URL).
# After `make demo`/`make install`, the cbir-pg command is .venv/bin/cbir-pg: `. .venv/bin/activate`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
TORCH_BUILD ?= auto
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PY := $(VENV)/bin/python
# pytest-xdist workers for `make test` (opt-in: TEST_WORKERS=2). Off by default: the workers share one
# server handed over as CBIR_PG_TEST_DSN, so the embedded-server security tests skip there, and migrations of
# two databases race on the cluster-wide roles. 0 = one process (what CI runs).
TEST_WORKERS ?= 0
export HF_HUB_OFFLINE ?= 1

.PHONY: install test demo bench bench-full bench-scale lint docs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@idx="$$(sh tools/torch_index.sh $(PY) $(TORCH_BUILD) $(TORCH_CPU_INDEX))" || exit 2; \
	$(PY) -m pip install -q $(TORCH_SPEC) $$idx
	$(PY) -m pip install -q -e ".[test,bench,weights,dicom,explain]"
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

demo: $(VENV)/.installed
	$(VENV)/bin/cbir-pg demo
	@echo "cbir-pg is $(VENV)/bin/cbir-pg: run . $(VENV)/bin/activate to use the bare command"

bench: $(VENV)/.installed
	$(PY) -m bench.run

bench-full: $(VENV)/.installed
	$(PY) -m bench.run --full

# evaluation as the index grows (issue 19): SIZES=20000,50000,100000,200000,1000000 to override
bench-scale: $(VENV)/.installed
	$(PY) -m bench.run --scale $(if $(SIZES),--sizes $(SIZES))

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(PY) -m tools.docgen --check

docs: $(VENV)/.installed
	$(PY) -m tools.docgen

clean:
	rm -rf $(VENV) build dist *.egg-info
