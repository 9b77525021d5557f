# Two commands: `make demo` runs the main job, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test demo lint chromium setup-latest test-latest

setup: $(STAMP)

# Reinstall when the package metadata changes; pip's cache is used on purpose.
$(STAMP): pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -e '.[dev,pinned]'
	touch $(STAMP)

# The report-rendering test needs headless Chromium: installed here if missing (Debian/apt).
chromium:
	bash tools/ensure-chromium

test: setup chromium
	$(VPY) -m pytest -q

demo: setup
	$(VPY) -m openmmml_e2former.cli demo

lint: setup
	$(VPY) -m ruff check .

# The second tested stack: the newest openmm (8.6.1) and openmm-ml (1.8), where the Python-side
# backend is the default (README, "Install"); its OpenMM-facing tests.
LATEST := .venv-latest
LPY := $(LATEST)/bin/python
LATEST_STAMP := $(LATEST)/.installed
LATEST_TESTS := tests/test_openmm.py tests/test_openmm_stacks.py tests/test_ase_calculator.py \
	tests/test_static_graph.py tests/test_reference_fixture.py tests/test_simulate_errors.py \
	tests/test_simulate_restart.py tests/test_simulate_quickcheck.py

setup-latest: $(LATEST_STAMP)

$(LATEST_STAMP): pyproject.toml
	test -x $(LPY) || $(PYTHON) -m venv $(LATEST)
	$(LPY) -m pip install -e '.[latest,ase]' pytest  # ase: tests/test_ase_calculator.py
	touch $(LATEST_STAMP)

test-latest: setup-latest
	$(LPY) -m pytest -q -p no:cacheprovider $(LATEST_TESTS)
