# Every target bootstraps .venv by itself: a fresh clone needs only Python 3.11+ and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_ARGS ?= --duration 60

.DEFAULT_GOAL := help
.PHONY: help install demo test lint format bench bench-quick reliability clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "storm-notifier needs Python 3.11 or newer (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv with the package and its dev tools

demo: $(STAMP)  ## the whole pipeline with no setup: simulator, embedded Redis, live view (DEMO_ARGS)
	$(BIN)/notifier demo $(DEMO_ARGS)

test: $(STAMP)  ## run the test suite (real local servers; no external services)
	$(BIN)/pytest --cov --cov-report=term

reliability: $(STAMP)  ## run the fault tests and write docs/reliability.md from their results (about 5 minutes)
	$(BIN)/pytest -m reliability -p no:cacheprovider --no-cov -q
	$(BIN)/python docs/reliability.py

lint: $(STAMP)  ## ruff, formatting and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)  ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)  ## benchmarks side by side: a 100k poll, detection, delivery, cycle, memory, streams, latency, partitions; reports in bench/results/
	$(BIN)/python -m bench.poll
	$(BIN)/python -m bench.detect
	$(BIN)/python -m bench.deliver --concurrency 32
	$(BIN)/python -m bench.cycle
	$(BIN)/python -m bench.memory
	$(BIN)/python -m bench.streams
	$(BIN)/python -m bench.latency
	$(BIN)/python -m bench.partitions

bench-quick: $(STAMP)  ## every benchmark once, small (about a minute): fails only if one breaks
	$(BIN)/python -m bench.poll --viewers 5000 --page-sizes 1000 --runs 1
	$(BIN)/python -m bench.detect --viewers 5000 --sizes 2000,5000 --changes 100 --runs 1
	$(BIN)/python -m bench.deliver --events 2000 --viewers 200 --runs 1
	$(BIN)/python -m bench.cycle --viewers 5000 --runs 1
	$(BIN)/python -m bench.memory --viewers 2000,10000 --polls 2
	$(BIN)/python -m bench.streams --viewers 5000 --streams 50 --runs 1
	$(BIN)/python -m bench.latency --duration 10
	$(BIN)/python -m bench.partitions --quick

clean:  ## remove .venv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .coverage .coverage.*
