# Every target bootstraps .venv by itself: a fresh clone needs only Python 3.11+ and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PORT   ?= 8480

.DEFAULT_GOAL := help
.PHONY: help install demo test lint format bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "storm-notifier needs Python 3.11 or newer (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv with the package and its dev tools

demo: $(STAMP)  ## start the simulator and print one snapshot of its audience
	@$(BIN)/notifier simulate --port $(PORT) --viewers 2000 --max-rows-per-page 50 \
	    --fault-5xx 0.05 --fault-429 0.02 --retry-after 1 --fault-malformed 0.02 2>/dev/null & \
	  sim=$$!; trap 'kill $$sim 2>/dev/null' EXIT; \
	  STORM_URL=http://127.0.0.1:$(PORT) $(BIN)/notifier snapshot --config config/notifier.yaml \
	    > $(VENV)/demo-snapshot.jsonl && \
	  head -n 3 $(VENV)/demo-snapshot.jsonl && echo "... ($$(wc -l < $(VENV)/demo-snapshot.jsonl) viewers in $(VENV)/demo-snapshot.jsonl)"

test: $(STAMP)  ## run the test suite (real local servers; no external services)
	$(BIN)/pytest --cov --cov-report=term

lint: $(STAMP)  ## ruff, formatting and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)  ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)  ## benchmark a 100k-viewer poll and its detection; reports in bench/results/
	$(BIN)/python -m bench.poll
	$(BIN)/python -m bench.detect

clean:  ## remove .venv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .coverage
