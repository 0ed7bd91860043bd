# The quick start is two commands: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
DEMO_ARGS ?= --duration 60

.PHONY: demo test lint typecheck unit bench system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Debian packages the tests drive as real peers: mosquitto (reference broker and
# mosquitto_pub/sub) and chromium (console tests). Installed only when missing.
system-deps:
	@missing=""; \
	command -v mosquitto >/dev/null || missing="$$missing mosquitto"; \
	command -v mosquitto_pub >/dev/null || missing="$$missing mosquitto-clients"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: $(STAMP)
	$(VENV)/bin/hedgerow demo $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP) system-deps
	$(PY) -m pytest -n 2 --dist loadfile --durations=15 $(PYTEST_ARGS)

test: lint typecheck unit

bench: $(STAMP) system-deps
	$(PY) bench/broker.py

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache .pytest_cache
