# Two commands set up everything on a fresh machine:
#   make demo   creates .venv if missing, installs medprune, runs the thermography demo
#   make test   same install, then the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.medprune-installed
DEMO_CONFIG ?= configs/thermography/demo.yaml
PYTEST_ARGS ?= -n 2

.PHONY: install demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch/torchvision are pinned here (they install from local disk on our machines); the
# project's own dependencies come from pyproject.toml.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/medprune run $(DEMO_CONFIG)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf runs .pytest_cache
