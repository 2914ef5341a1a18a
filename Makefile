# Developer and CI entry points. `make test` builds everything it needs from scratch.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Touched after a successful install: the venv is rebuilt only when pyproject.toml changes.
VENV_STAMP := $(VENV)/.installed
EXTRAS := dev,loadtest,plots,bench,experiments
PYTEST_ARGS ?=
# `make system-deps WITH_PROMETHEUS=1` also installs prometheus, `WITH_COMPOSE=1` Debian's
# docker-compose (it validates docker-compose.yml without an engine); `make test` sets both.
WITH_PROMETHEUS ?= 0
WITH_COMPOSE ?= 0
DEMO_ARGS ?=
STACK_ARGS ?=
TRAIN_ARGS ?=
# `docker compose` (v2 plugin) when present, else docker-compose (v1); empty when neither.
COMPOSE := $(shell if docker compose version >/dev/null 2>&1; then echo "docker compose"; \
	elif command -v docker-compose >/dev/null; then echo docker-compose; fi)
# The upstream worker runs on GPU (docker-compose.gpu.yml added) when Docker can hand GPUs to
# containers: the NVIDIA Container Toolkit's runtime is registered with the engine and a driver
# answers. nvidia-smi alone is not enough (no toolkit: the container would not start).
# UPSTREAM_GPU=1 or 0 decides instead; COMPOSE_PROFILES=traffic,loadtest adds those services.
UPSTREAM_GPU ?= $(shell docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"nvidia"' \
	&& nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
COMPOSE_FILES := -f docker-compose.yml $(if $(filter 1,$(UPSTREAM_GPU)),-f docker-compose.gpu.yml)
CHECKPOINT_FILES := $(foreach s,upstream online,artifacts/demo/$(s)/config.json \
	artifacts/demo/$(s)/model.safetensors)

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_GET := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: help venv system-deps test lint fmt bench-model bench train demo stack ranker up down \
	docs loadtest bench-report mutation

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

venv: $(VENV_STAMP)  ## create .venv and install the project with its dev extras

$(VENV_STAMP): pyproject.toml
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar off -e '.[$(EXTRAS)]'
	touch $@

system-deps:  ## apt-get install redis-server (prometheus, docker-compose: WITH_*=1) if missing
	@if ! command -v redis-server >/dev/null; then \
		echo "installing redis-server"; \
		$(APT_GET) update -qq && $(APT_GET) install -y -qq --no-install-recommends redis-server; \
	fi
	@if [ "$(WITH_PROMETHEUS)" = 1 ] && ! command -v prometheus >/dev/null; then \
		echo "installing prometheus"; \
		$(APT_GET) update -qq && $(APT_GET) install -y -qq --no-install-recommends prometheus; \
	fi
	@if [ "$(WITH_COMPOSE)" = 1 ] && ! command -v docker-compose >/dev/null; then \
		echo "installing docker-compose (to validate docker-compose.yml; no engine needed)"; \
		$(APT_GET) update -qq && $(APT_GET) install -y -qq --no-install-recommends docker-compose; \
	fi

# The stack tests run a real Prometheus and validate the compose file with docker-compose.
test: WITH_PROMETHEUS = 1
test: WITH_COMPOSE = 1

test: venv system-deps  ## run the test suite (fails when no test is collected)
	@rc=0; $(PY) -m pytest -q $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)" >&2; fi; \
	exit $$rc

# Slow (tens of minutes on 2 cores): never part of `make test`. MUTATION_ARGS=offsets losses
# picks targets; --survivors retests only the last run's survivors (tests/mutation/run.py).
MUTATION_ARGS ?=
mutation: venv system-deps  ## mutation-test the modules that carry the guarantees; score per module
	$(PY) -c 'import mutmut' 2>/dev/null || $(PY) -m pip install --quiet -e '.[$(EXTRAS),mutation]'
	$(PY) -m tests.mutation.run $(MUTATION_ARGS)

lint: venv  ## ruff check and ruff format --check over the repo
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

fmt: venv  ## apply ruff fixes and formatting
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# Each benchmark prints its tables and writes docs/benchmarks/results/<name>.json.
bench-model: venv  ## model micro-benchmark (scoring, encode, FLOPs floor) -> results/model.json
	$(PY) -m loadtests.bench.model --history-length 250,500,1000

bench: venv system-deps  ## every benchmark in loadtests/bench/ (each writes its result JSON)
	for module in $$(ls loadtests/bench/*.py | xargs -n1 basename | sed 's/\.py$$//' \
		| grep -v -e '^_' -e '^common$$' -e '^peer_litserve$$' -e '^http_load$$' \
			-e '^queueing$$'); do \
		echo "== loadtests.bench.$$module"; $(PY) -m loadtests.bench.$$module; \
	done

train: venv  ## train the demo checkpoints into artifacts/demo/{upstream,online}
	$(PY) -m shared_model.training --out artifacts/demo $(TRAIN_ARGS)

demo: venv system-deps  ## the whole system locally: broker, Redis, both services, traffic, report
	$(PY) -m loadtests.stack.demo $(DEMO_ARGS)

docs: venv  ## regenerate the dashboards, the configuration reference and the benchmark pages
	$(PY) -m loadtests.reports.dashboards
	$(PY) -m loadtests.reports.config_reference
	$(PY) -m loadtests.reports.render

# `make stack STACK_ARGS="--ranker-port 8001 --no-prometheus"`; `llatte-stack --help` lists all.
stack: venv system-deps  ## the local stack on fixed ports (Kafka 19092, Redis 16379, ranker 8000), up until Ctrl-C
	$(PY) -m loadtests.stack $(STACK_ARGS)

# `make ranker RANKER_ARGS="--port 8001"`; configured by RANKER_* variables (docs/operations.md).
ranker: venv  ## the ranker alone on 127.0.0.1:8000 (uvicorn --loop uvloop --http httptools)
	$(PY) -m ranker_service $(RANKER_ARGS)

up:  ## docker compose up: secrets, checkpoints, GPU override when usable (docs/operations.md)
	@if [ "$(COMPOSE)" != "docker compose" ] || ! docker info >/dev/null 2>&1; then \
		echo "make up: needs a running Docker engine and Compose v2 (docker compose);" \
			"not usable here. Without Docker: make demo" >&2; exit 1; \
	fi
	@for f in $(CHECKPOINT_FILES); do [ -f "$$f" ] || { $(MAKE) train; break; }; done
	@for f in $(CHECKPOINT_FILES); do [ -f "$$f" ] || { echo "make up: $$f is missing" >&2; exit 1; }; done
	@# The images run as uid 10001: the checkpoints must be readable by anyone.
	chmod -R a+rX artifacts/demo
	bash docker/make-secrets.sh secrets
	@echo "compose files: $(COMPOSE_FILES); profiles: $${COMPOSE_PROFILES:-(none)}"
	$(COMPOSE) $(COMPOSE_FILES) up -d --build --wait
	@echo "rankers on:"; $(COMPOSE) $(COMPOSE_FILES) ps --format '{{.Name}} {{.Ports}}' ranker

down:  ## docker compose down (volumes are kept; `make down DOWN_ARGS=-v` drops them)
	@if [ "$(COMPOSE)" != "docker compose" ]; then echo "make down: no Compose v2 here" >&2; exit 1; fi
	COMPOSE_PROFILES=traffic,loadtest $(COMPOSE) -f docker-compose.yml -f docker-compose.gpu.yml \
		down $(DOWN_ARGS)

# `make loadtest LOADTEST_HOST=http://127.0.0.1:8000 LOADTEST_RATE=20 LOADTEST_ARRIVAL=constant
#  SLO_P99_MS=50 SLO_ERROR_RATE=0.01 KAFKA=127.0.0.1:9092 EVENT_RATE=50`; LOADTEST_ARGS passes
# anything else to loadtests.locust.run (e.g. --start-ranker, --max-candidates 100).
LOADTEST_HOST ?= http://127.0.0.1:8000
LOADTEST_RATE ?= 10
LOADTEST_DURATION ?= 60s
LOADTEST_ARRIVAL ?= poisson
SLO_P99_MS ?=
SLO_ERROR_RATE ?=
KAFKA ?=
EVENT_RATE ?= 20
LOADTEST_ARGS ?=

loadtest: venv  ## headless Locust run against a running ranker: CSV+HTML, P50/P95/P99, SLO exit
	$(PY) -m loadtests.locust.run --host $(LOADTEST_HOST) --rate $(LOADTEST_RATE) \
		--duration $(LOADTEST_DURATION) --arrival $(LOADTEST_ARRIVAL) \
		$(if $(SLO_P99_MS),--slo-p99-ms $(SLO_P99_MS)) \
		$(if $(SLO_ERROR_RATE),--slo-error-rate $(SLO_ERROR_RATE)) \
		$(if $(KAFKA),--kafka $(KAFKA) --event-rate $(EVENT_RATE)) $(LOADTEST_ARGS)

bench-report: bench  ## re-measure everything, then render docs/benchmarks.md and its pages
	$(PY) -m loadtests.reports.render
