# Two commands: `make run` (set up, then the seed experiment) and `make test` (set up, then the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: setup run test lint bench clean

$(BIN)/likex: pyproject.toml requirements-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements-cpu.txt
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/likex

run: setup
	$(BIN)/likex run $(ARGS)

test: setup
	$(BIN)/ruff check likex tests bench
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/speed.py --device cpu

clean:
	rm -rf $(VENV) runs
