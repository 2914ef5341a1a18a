# Developer and CI entry points. `make test` builds everything it needs from scratch.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Touched after a successful install: the venv is rebuilt only when pyproject.toml changes.
VENV_STAMP := $(VENV)/.installed
EXTRAS := dev,loadtest,plots
PYTEST_ARGS ?=
# `make system-deps WITH_PROMETHEUS=1` also installs prometheus (only the load-test stack needs it).
WITH_PROMETHEUS ?= 0

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_GET := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get

# Targets that are not written yet, with the issue that tracks each.
PLACEHOLDERS := train demo bench loadtest up down
ISSUE_train ?= TBD
ISSUE_demo ?= TBD
ISSUE_bench ?= TBD
ISSUE_loadtest ?= TBD
ISSUE_up ?= TBD
ISSUE_down ?= TBD

.PHONY: help venv system-deps test lint fmt bench-model $(PLACEHOLDERS)

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'
	@echo "  not yet:     $(PLACEHOLDERS)"

venv: $(VENV_STAMP)  ## create .venv and install the project with its dev extras

$(VENV_STAMP): pyproject.toml
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar off -e '.[$(EXTRAS)]'
	touch $@

system-deps:  ## apt-get install redis-server (and prometheus with WITH_PROMETHEUS=1) if missing
	@if ! command -v redis-server >/dev/null; then \
		echo "installing redis-server"; \
		$(APT_GET) update -qq && $(APT_GET) install -y -qq --no-install-recommends redis-server; \
	fi
	@if [ "$(WITH_PROMETHEUS)" = 1 ] && ! command -v prometheus >/dev/null; then \
		echo "installing prometheus"; \
		$(APT_GET) update -qq && $(APT_GET) install -y -qq --no-install-recommends prometheus; \
	fi

test: venv system-deps  ## run the test suite (fails when no test is collected)
	@rc=0; $(PY) -m pytest -q $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)" >&2; fi; \
	exit $$rc

lint: venv  ## ruff check and ruff format --check over the repo
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

fmt: venv  ## apply ruff fixes and formatting
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench-model: venv  ## model micro-benchmarks (prints a table)
	$(PY) -m shared_model.bench

$(PLACEHOLDERS):  ## not written yet
	@echo "make $@: coming: see issue $(ISSUE_$@)" >&2; exit 1
