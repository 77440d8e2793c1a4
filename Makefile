# Two commands on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8080
SIM_PORT ?= 9000

SOURCES := proxy detectors reference_upstream fire_drill forensics tests scripts bench grafana deploy

.PHONY: install run test test-unit fmt check lint clean sim bench bench-detector bench-audit bench-proxy bench-llamacpp soak

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# `make run` installs the package alone (light: no litellm, no test tools); `make test` adds the extras.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev,litellm,postgres,llamacpp,forensics,report,otel,judge]'
	touch $@ $(VENV)/.installed-run

install: $(VENV)/.installed

# The proxy on 127.0.0.1:$(PORT), in front of $$UPSTREAM_BASE_URL, or of a local sim-upstream when unset.
run: $(VENV)/.installed-run
	@if [ -n "$$UPSTREAM_BASE_URL" ]; then \
		exec $(BIN)/refusal-guard serve --upstream "$$UPSTREAM_BASE_URL" --port $(PORT); \
	else \
		$(BIN)/refusal-guard sim-upstream --port $(SIM_PORT) & sim=$$!; \
		trap "kill $$sim 2>/dev/null" EXIT INT TERM; \
		$(BIN)/refusal-guard serve --upstream http://127.0.0.1:$(SIM_PORT)/v1 --port $(PORT); \
	fi

sim: $(VENV)/.installed-run
	$(BIN)/refusal-guard sim-upstream --port $(SIM_PORT)

test: install
	$(BIN)/python -m pytest -q --durations=15 $(PYTEST_ARGS)

# the fast loop (CONTRIBUTING.md): the unit tests and the doctests, no servers
test-unit: install
	$(BIN)/python -m pytest -q tests/unit proxy detectors reference_upstream fire_drill forensics $(PYTEST_ARGS)

fmt: install
	$(BIN)/ruff format $(SOURCES)
	$(BIN)/ruff check --fix $(SOURCES)

# Benchmarks write bench/results/; figures are quoted in the README with the machine they came from.
bench: bench-detector bench-audit bench-proxy

# needs Debian's wrk; installs LiteLLM's proxy (pinned) into .bench/litellm on first use
bench-proxy: install
	$(BIN)/python bench/proxy.py --workers-scaling $(BENCH_ARGS)

# 30 minutes of steady mixed load on one worker (not part of `make bench`)
soak: install
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

# the proxy's cost in front of llama.cpp's own server with a real model (not part of `make bench`)
bench-llamacpp: install
	$(BIN)/python bench/llamacpp.py $(BENCH_ARGS)

bench-audit: install
	$(BIN)/python bench/audit.py

bench-detector: install
	$(BIN)/python bench/detector.py

lint: install
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/mypy

check: lint test

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
