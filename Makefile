# The two commands of the README: `make demo` and `make test`. Both do all set-up first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build that pip finds on this kind of machine without a multi-GB CUDA download.
# Override (e.g. `make install TORCH_SPEC=torch`) to use another build; an installed torch is kept.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test test-slow lint format clean chromium

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: install
	rm -rf runs/demo
	$(BIN)/evonas search --preset demo --name demo

lint: install
	$(BIN)/ruff check evonas tests benchmarks examples
	$(BIN)/ruff format --check evonas tests benchmarks examples

format: install
	$(BIN)/ruff format evonas tests benchmarks examples
	$(BIN)/ruff check --fix evonas tests benchmarks examples

# pytest exits 5 when nothing was collected; that is not a failure here.
test: install lint
	$(BIN)/python -m pytest -q -x; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

test-slow: install
	$(BIN)/python -m pytest -q -m slow; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info

# Headless Chromium for the report rendering test (skipped when absent). Debian's package, as root.
chromium:
	command -v chromium >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)
