# Two commands: `make demo` runs the main job, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test demo lint chromium

setup: $(STAMP)

# Reinstall when the package metadata changes; pip's cache is used on purpose.
$(STAMP): pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -e '.[dev]'
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
