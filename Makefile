# callpulse: the two commands are `make demo` and `make test`; everything else is set-up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DURATION ?=
SYSTEM_PACKAGES := clickhouse-server prometheus prometheus-alertmanager

.PHONY: demo test test-data lint bench bench-engine bench-memory bench-instructions bench-floor system-deps venv compile clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "callpulse needs Python 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

# The KPI engine's modules compiled with Cython (only those changed; streams/compiled.py).
compile: venv
	@command -v cc >/dev/null || { echo "installing: gcc libc6-dev"; $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq gcc libc6-dev >/dev/null; }
	$(BIN)/callpulse compile

# Real services for the tests: Debian's ClickHouse, Prometheus and Alertmanager.
system-deps:
	@missing=""; \
	command -v clickhouse-server >/dev/null || [ -x /usr/sbin/clickhouse-server ] || missing="$$missing clickhouse-server"; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	command -v prometheus-alertmanager >/dev/null || command -v alertmanager >/dev/null || missing="$$missing prometheus-alertmanager"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: venv system-deps lint compile
	$(BIN)/python -m pytest

# Tests on third-party data in ../shared/data (present in CI).
test-data: venv compile
	$(BIN)/python -m pytest -m shared_data

demo: venv compile
	$(BIN)/callpulse demo $(if $(DURATION),--duration $(DURATION),)

# callpulse side by side with naive faust, Quix Streams and raw aiokafka (docs/performance.md)
bench: venv compile
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/bench_peers.py --events $(or $(EVENTS),200000) --runs $(or $(RUNS),3)

# the KPI engine alone: in-process, and one worker on single records and envelopes
bench-engine: venv compile
	$(BIN)/python benchmarks/bench_kpi_engine.py

# RSS over a long run (default 10 million events, a line per million; EVENTS= to change)
bench-memory: venv compile
	$(BIN)/python benchmarks/bench_memory.py --events $(or $(EVENTS),10000000)

# instructions per event of the engine under valgrind: a figure the machine's load does not move
bench-instructions: venv compile
	@command -v valgrind >/dev/null || { echo "installing: valgrind"; $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq valgrind >/dev/null; }
	$(BIN)/python benchmarks/bench_instructions.py --events $(or $(EVENTS),20000)

# what validation and pseudonymisation alone cost: the ceiling of any worker of this shape
bench-floor: venv compile
	$(BIN)/python benchmarks/bench_floor.py --events $(or $(EVENTS),100000)

clean:
	[ ! -x $(BIN)/callpulse ] || $(BIN)/callpulse compile --clean
	rm -rf $(VENV) var .pytest_cache .ruff_cache
