# One-command set-up on a fresh machine: `make demo` runs the main job, `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1

.PHONY: install demo test bench ui

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first (a plain `torch` requirement would pull a multi-GB CUDA build).
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/ptiedit demo -o out/demo --force

test: install
	bash .ci/browser.sh
	$(PY) -m pytest -q

bench: install
	$(VENV)/bin/ptiedit bench --out out/bench

ui: install
	$(VENV)/bin/ptiedit ui
