# orderview: see README.md. Every target is safe to run on a fresh machine.
.PHONY: up down run watch test lint bench bench-quick chaos

up:            ## Kafka + PostgreSQL on loopback, database, roles, topics (idempotent)
	bash ops/up.sh

down:          ## stop what `make up` started
	bash ops/down.sh

run: up        ## the service with demo data: projector, API replicas, emulator
	bash ops/run.sh

watch:         ## Prometheus on loopback, scraping what `make run` starts, with the alert rules
	bash ops/prometheus.sh start

test:          ## everything, from nothing: venv, packages, services, pytest
	bash ops/test.sh $(PYTEST_ARGS)

lint:
	bash ops/venv.sh
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

bench: up      ## benchmarks against same-run baselines (< 10 min): bench/RESULTS.md, bench/results.png
	.venv/bin/python -c 'import matplotlib' 2>/dev/null || .venv/bin/pip install -q -e '.[bench]'
	.venv/bin/python -m bench

bench-quick: up  ## the same with smaller counts (about a minute)
	.venv/bin/python -c 'import matplotlib' 2>/dev/null || .venv/bin/pip install -q -e '.[bench]'
	.venv/bin/python -m bench --quick

SEED ?= 1
DURATION ?= 300
BROKERS ?= 1
FAILOVER ?= 0
chaos: up      ## adversarial run: hostile messages, kill -9, restarts (SEED=, DURATION= s; BROKERS=3: on a cluster; FAILOVER=1: PostgreSQL failovers)
	.venv/bin/python -m tests.chaos --seed $(SEED) --duration $(DURATION) --brokers $(BROKERS) $(if $(filter 1,$(FAILOVER)),--failover)
