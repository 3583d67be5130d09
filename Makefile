# The clap service. Quick start: `make run` (embedded, no servers) and `make test` (everything).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
RUN_DIR := .run
LOGS := $(RUN_DIR)/logs
PROC := bash deploy/local/proc.sh
SERVICES := bash deploy/local/services.sh
# The replicated deployment (`make up-ha`); every address is an HA_* variable, see deploy/local/ha.sh.
HA := bash deploy/local/ha.sh
HA_RUN_DIR ?= $(RUN_DIR)/ha
export HA_RUN_DIR
# kustomize renders deploy/k8s for the manifest tests (tests/deploy). Built from the Go module
# proxy at a pinned version into .lib/, so a fresh machine needs only Go, which it has.
KUSTOMIZE_VERSION := v5.7.1
KUSTOMIZE := .lib/kustomize-$(KUSTOMIZE_VERSION)/kustomize
# Distributed-mode settings shared by `make up` processes (see deploy/k8s for a cluster).
DIST_ENV := CLAP_MODE=distributed KAFKA_BOOTSTRAP=127.0.0.1:9092 CASSANDRA_HOSTS=127.0.0.1 \
            CLAP_SECRET=$${CLAP_SECRET:-local-dev-secret-change-me} PYTHONPATH=$(CURDIR)

.PHONY: help runtime venv browser tools run up up-ha chaos rebuild down status test test-unit test-fast bench clean

help:
	@echo "make run    - the embedded service on http://127.0.0.1:$(PORT) (installs what it needs)"
	@echo "make test   - the whole suite: unit, contract, integration, browser (installs and starts everything)"
	@echo "make up     - real Kafka + Cassandra + processor + projector + gateway on :$(PORT); make down stops them"
	@echo "make up-ha  - 3 Kafka brokers, 3 Cassandra nodes, 2 gateways (:8000, :8001), 2 Faust workers, 2 projectors"
	@echo "make chaos  - the fault suite against make up-ha (docs/RELIABILITY.md)"
	@echo "make rebuild EPOCH=N - rebuild every count from the clap log at epoch N, live, and compare"
	@echo "make bench  - the load test scenarios (see loadtest/README.md)"

# Two stamps: `make run` needs only the runtime packages (seconds on a warm cache); the test
# and benchmark tools (Playwright, matplotlib, ...) come with `make test` and `make bench`.
$(VENV)/.runtime: requirements.txt
	@echo "installing the runtime packages into $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed: $(VENV)/.runtime requirements-dev.txt
	@echo "installing the test and benchmark packages into $(VENV)"
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $@

runtime: $(VENV)/.runtime
venv: $(VENV)/.installed

$(KUSTOMIZE):
	@echo "installing kustomize $(KUSTOMIZE_VERSION) into $(dir $(KUSTOMIZE)) (go install)"
	@command -v go >/dev/null || { echo "kustomize is built with Go, and go is not on PATH"; exit 1; }
	GOBIN=$(CURDIR)/$(dir $(KUSTOMIZE)) GOTOOLCHAIN=local go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

tools: $(KUSTOMIZE)

# Debian's chromium for the browser tests (a test tool cannot download its own browser here).
browser:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-color-emoji) >/dev/null; }

run: runtime
	@echo "embedded clap service: data in ./data, Ctrl-C stops it"
	PORT=$(PORT) $(PY) -m gateway

# On one machine the durable projection (Cassandra, the projector) yields the CPU to the realtime
# path (gateway, Kafka, processor): its rows may trail by a batch, a reader's count may not.
# Paired runs: BENCHMARKS §4.9. In Kubernetes each pod has its own CPU requests instead.
DURABLE_NICE ?= 10

up: runtime
	CLAP_CASSANDRA_NICE=$(DURABLE_NICE) $(SERVICES) up
	$(DIST_ENV) $(PY) -m processor.topics
	$(PROC) start processor $(LOGS)/processor.log -- env $(DIST_ENV) $(PY) -m processor worker -l info || true
	$(PROC) start projector $(LOGS)/projector.log -- nice -n $(DURABLE_NICE) env $(DIST_ENV) $(PY) -m projector || true
	$(PROC) start gateway $(LOGS)/gateway.log -- env $(DIST_ENV) PORT=$(PORT) $(PY) -m gateway || true
	@# Return only when every service is ready: the processor has restored its tables (GET /ready),
	@# the projector consumes (its log line since its last start), the gateway takes readers.
	$(PROC) wait-http http://127.0.0.1:$${PROCESSOR_WEB_PORT:-6066}/ready 300
	@timeout 60 bash -c 'until tac $(LOGS)/projector.log | sed "/proc.sh start projector/q" | grep -q "projector consuming"; do sleep 0.2; done' \
	  || { echo "projector not consuming within 60 s; see $(LOGS)/projector.log" >&2; exit 1; }
	$(PROC) wait-http http://127.0.0.1:$(PORT)/readyz 60
	@echo "up: http://127.0.0.1:$(PORT)/  (logs in $(LOGS)/; make down stops everything)"

up-ha: runtime
	$(HA) up

# The fault suite needs the test packages and a running `make up-ha` (started if it is not).
# CHAOS_ARGS passes options, e.g. CHAOS_ARGS="--faults gateway-kill,leader-kill".
chaos: venv
	$(HA) up
	$(PY) -m loadtest.chaos $(CHAOS_ARGS)

# Rebuild at a new epoch: against `make up-ha` when it has run (2 workers), else `make up` (1).
# RETIRE=name,name stops those old-epoch workers once the rebuilt totals match.
rebuild: runtime
	@[ -n "$(EPOCH)" ] || { echo "usage: make rebuild EPOCH=N [WORKERS=n] [RETIRE=processor1,processor2]" >&2; exit 64; }
	@if [ -f $(HA_RUN_DIR)/deployment.env ]; then \
	  $(PY) -m processor.rebuild --epoch $(EPOCH) --workers $${WORKERS:-2} --env-file $(HA_RUN_DIR)/deployment.env \
	    --run-dir $(HA_RUN_DIR) $${RETIRE:+--retire $$RETIRE} --recount; \
	else \
	  env $(DIST_ENV) $(PY) -m processor.rebuild --epoch $(EPOCH) --workers $${WORKERS:-1} --run-dir $(RUN_DIR) \
	    $${RETIRE:+--retire $$RETIRE} --recount; \
	fi

down:
	-$(HA) down
	-$(PROC) stop gateway
	-$(PROC) stop projector
	-$(PROC) stop processor
	$(SERVICES) down

status:
	-@$(HA) status
	-$(SERVICES) status
	-@for p in processor projector gateway; do $(PROC) status $$p && echo "$$p running" || echo "$$p stopped"; done

# Everything CI runs. Starts Kafka and Cassandra if they are not running, and stops them again
# afterwards only if it was the one that started them.
test: venv browser tools
	@started=0; $(SERVICES) status >/dev/null 2>&1 || { $(SERVICES) up && started=1; }; \
	$(PY) -m pytest -ra; rc=$$?; \
	[ $$started = 1 ] && $(SERVICES) down; exit $$rc

test-unit: venv
	$(PY) -m pytest -q tests/unit

bench: venv
	$(PY) -m loadtest all

clean: down
	rm -rf $(RUN_DIR) data
