# certfailover: `make demo` and `make test` work on a fresh Debian machine as root.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
DEB_PACKAGES := pebble nginx apache2 haproxy wrk curl openssl ca-certificates python3-venv postgresql systemd bind9 bind9-utils chromium chromium-driver certspotter
PYTEST_ARGS ?=

.PHONY: deps venv test unit integration demo bench lint clean

deps:  ## Debian packages (as root); skipped when everything is there
	@missing=""; for b in pebble pebble-challtestsrv nginx apache2 haproxy wrk curl openssl systemd-analyze named chromium chromedriver certspotter; do \
	  command -v $$b >/dev/null 2>&1 || [ -x /usr/sbin/$$b ] || missing="$$missing $$b"; done; \
	python3 -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then echo "installing Debian packages (missing:$$missing)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEB_PACKAGES) >/dev/null; fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml lab/pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]' -e ./lab
	touch $@

test: deps venv  ## the whole suite (unit + integration on real pebble, nginx, apache2, haproxy, postgresql)
	$(VENV)/bin/pytest -q -p no:cacheprovider --durations=25 $(PYTEST_ARGS)

unit: venv
	$(VENV)/bin/pytest -q tests/unit

integration: deps venv
	$(VENV)/bin/pytest -q tests/integration

demo: deps venv  ## two local CAs, a local nginx, a real revocation and a verified failover
	$(VENV)/bin/certfailover demo

bench: deps venv
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lint: venv
	$(VENV)/bin/ruff check src lab/src tests bench
	$(VENV)/bin/mypy src lab/src

clean:
	rm -rf .demo build *.egg-info
