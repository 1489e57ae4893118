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
TORCH_PKGS := torch==2.14.1 torchvision==0.29.1
# PyPI's torch for Linux x86-64 is the CUDA build (~6 GB with its NVIDIA libraries). On a machine
# without a GPU, install the CPU build from PyTorch's own index instead:
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
# (its 2.14.1+cpu satisfies the ==2.14.1 pins below, so pip keeps it).
TORCH_INDEX ?=
PIP := $(PY) -m pip install -q --disable-pip-version-check

$(STAMP): pyproject.toml | $(PY)
ifneq ($(strip $(TORCH_INDEX)),)
	$(PIP) --index-url $(TORCH_INDEX) $(TORCH_PKGS)
endif
	$(PIP) $(TORCH_PKGS) -e '.[dev]'
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
