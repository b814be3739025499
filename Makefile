# Two commands for a newcomer:  `make run` (studio on the demo store)  and  `make test` (whole suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PORT   ?= 8501

.PHONY: run test setup browser-deps bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

## Prepare the demo store and a demo model on first start (progress bar), then open the studio.
run: setup
	$(PY) -m crossrec_core.training.bootstrap
	$(VENV)/bin/streamlit run app.py --server.address 127.0.0.1 --server.port $(PORT)

## Everything the tests need (venv, and Debian's Chromium for the browser test when root), then the suite.
test: setup browser-deps
	$(PY) -m pytest

browser-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "Installing Debian's chromium for the browser test..."; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "note: /usr/bin/chromium missing and not root: the browser test will be skipped (install Debian's chromium to run it)."; \
	  fi; \
	fi

bench: setup
	$(PY) bench/ingest.py
	$(PY) bench/train_speed.py
	$(PY) bench/quality.py

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
