# syncd — every task a developer or CI runs. `make help` lists them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := examples/deployment/requirements.lock

.PHONY: help demo test check lint format types contracts services bench bench-1m bench-memory clean

help:
	@echo "make demo       run syncd end to end against the embedded fakes (offline)"
	@echo "make test       run the test suite (starts PostgreSQL/MariaDB if they are down)"
	@echo "make check      lint, format check, types, import contracts, then the tests"
	@echo "make bench      benchmark (100k products; BENCH_N=1000000 for 1M), then the peak memory of"
	@echo "                a first sync at 1M and 3M (~30 min; BENCH_MEMORY_N=100000 for 100k and 300k)"
	@echo "make bench-1m   the 1M-product JSON Lines runs (no PostgreSQL, no throughput)"
	@echo "make bench-memory  peak RSS of a plan and a first sync at BENCH_N and 3x (flat?)"
	@echo "make clean      remove the virtualenv and scratch files"

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# the runtime dependencies at the versions the lock (and so the image) pins, not
	@# whatever the index has today: the tests run what ships
	grep -oE '^[A-Za-z0-9_.-]+==[^ ;\\]+' $(LOCK) > $(VENV)/constraints.txt
	$(BIN)/python -m pip install --quiet -c $(VENV)/constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/syncd demo
	$(BIN)/syncd demo --live

services:
	@scripts/services.sh

test: $(STAMP) services
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check syncd tests bench migrations
	$(BIN)/ruff format --check syncd tests bench migrations

format: $(STAMP)
	$(BIN)/ruff format syncd tests bench migrations
	$(BIN)/ruff check --fix syncd tests bench migrations

types: $(STAMP)
	$(BIN)/mypy

contracts: $(STAMP)
	$(BIN)/lint-imports

check: lint types contracts test

bench: $(STAMP) services
	$(BIN)/python -m bench --n $${BENCH_N:-100000}
	$(BIN)/python -m bench.feeds --feed all --rate 100 --seconds 10 --userflux-rate-limit 0
	$(BIN)/python -m bench.memory --n $${BENCH_MEMORY_N:-1000000} --modes sync

bench-memory: $(STAMP)
	$(BIN)/python -m bench.memory --n $${BENCH_N:-100000}

bench-1m: $(STAMP)
	$(BIN)/python -m bench --n 1000000 --sources jsonl --no-throughput

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
