# Kumo: every target installs what it needs, idempotently, on a fresh Debian 12 machine (as root).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := python3 python3-venv python3-dev gcc zookeeper default-jre-headless \
  clang llvm libbpf1 libbpf-dev iproute2 busybox iperf3 tcpdump traceroute iputils-ping redis-server jq bird2 openssl prometheus systemd \
  graphviz chromium
APT_STAMP := $(VENV)/.apt-installed
PIP_STAMP := $(VENV)/.pip-installed

.PHONY: all setup demo test lint unit integration bench clean

all: test

# apt: `apt-get update` once, then a non-interactive install (CI has no stdin).
$(APT_STAMP): Makefile
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@mkdir -p $(VENV) && touch $@

$(PY): $(APT_STAMP)
	python3 -m venv $(VENV)

$(PIP_STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m kumo.datapath.build >/dev/null  # compile the BPF programs into the cache once
	touch $@

setup: $(PIP_STAMP)

lint: setup
	$(VENV)/bin/ruff check kumo tests bench
	$(VENV)/bin/ruff format --check kumo tests bench
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest -q -ra tests

unit: setup
	$(VENV)/bin/pytest -q tests/unit

integration: setup
	$(VENV)/bin/pytest -q -ra tests/integration

demo: setup
	$(VENV)/bin/kumo demo $(if $(KEEP),--keep)

bench: setup
	$(PY) bench/store_bench.py
	$(PY) bench/sim_bench.py
	$(PY) bench/datapath_bench.py
	$(PY) bench/crr_bench.py
	$(PY) bench/lb_bench.py
	$(PY) bench/port_security_bench.py
	$(PY) bench/metrics_bench.py
	$(PY) bench/ui_bench.py
	$(PY) bench/convergence_bench.py
	$(PY) bench/l4state_bench.py
	$(PY) bench/edge_bench.py
	$(PY) bench/scale_bench.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
