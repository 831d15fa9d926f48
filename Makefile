# Two commands for a newcomer: `make demo` and `make test`. Both create the virtual environment first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= out/demo

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[all]"
	# The serving tests' Triton server: the wheel ships tritonserver. Kept in its own folder, off the import
	# path, without its Python dependencies (it pins numpy<2, which the binary does not need).
	$(BIN)/pip install --quiet --no-deps --target $(VENV)/tritonserver "nvidia-pytriton==0.7.0"
	touch $@

demo: setup
	$(BIN)/stablemtl-demo --out $(OUT) --overwrite

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out .pytest_cache
