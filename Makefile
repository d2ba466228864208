# TACO demo — two commands for a newcomer: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: help setup run test test-fast bench fuzz lint browser clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): requirements.txt requirements-dev.txt requirements-lpips.txt requirements-lock.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt -c requirements-lock.txt
	$(PY) -m pip install -q --no-deps --require-hashes -r requirements-lpips.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP) ## create .venv, install the pinned requirements and the project (editable, `taco` command; idempotent)

browser: ## install Debian's chromium for the browser test (needs root; skipped otherwise)
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: the browser test will be skipped"; }

run: setup ## launch the demo on the shipped models (http://127.0.0.1:7860)
	$(PY) app.py

test: setup browser ## the full offline test suite
	$(PY) -m pytest

test-fast: setup ## tests without the slow / browser ones
	$(PY) -m pytest -m "not slow and not browser"

bench: setup ## speed and memory numbers (JSON) on a shipped asset
	$(PY) -m app bench

fuzz: setup ## 10 000 hostile-bitstream cases
	FUZZ_EXAMPLES=10000 $(PY) -m pytest tests/test_fuzz_bitstream.py -q

lint: setup ## ruff, and mypy on app/
	$(VENV)/bin/ruff check app tests scripts app.py
	$(VENV)/bin/mypy

clean: ## remove caches (keeps .venv)
	rm -rf .pytest_cache .ruff_cache .hypothesis
