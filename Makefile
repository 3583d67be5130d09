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
# kustomize renders deploy/k8s for the manifest tests (tests/deploy). Built from the Go module
# proxy at a pinned version into .lib/, so a fresh machine needs only Go, which it has.
KUSTOMIZE_VERSION := v5.7.1
KUSTOMIZE := .lib/kustomize-$(KUSTOMIZE_VERSION)/kustomize
# Distributed-mode settings shared by `make up` processes (see deploy/k8s for a cluster).
DIST_ENV := CLAP_MODE=distributed KAFKA_BOOTSTRAP=127.0.0.1:9092 CASSANDRA_HOSTS=127.0.0.1 \
            CLAP_SECRET=$${CLAP_SECRET:-local-dev-secret-change-me} PYTHONPATH=$(CURDIR)

.PHONY: help runtime venv browser tools run up down status test test-unit test-fast bench clean

help:
	@echo "make run    - the embedded service on http://127.0.0.1:$(PORT) (installs what it needs)"
	@echo "make test   - the whole suite: unit, contract, integration, browser (installs and starts everything)"
	@echo "make up     - real Kafka + Cassandra + processor + projector + gateway on :$(PORT); make down stops them"
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

up: runtime
	$(SERVICES) up
	$(DIST_ENV) $(PY) -m processor.topics
	$(PROC) start processor $(LOGS)/processor.log -- env $(DIST_ENV) $(PY) -m processor worker -l info || true
	$(PROC) start projector $(LOGS)/projector.log -- env $(DIST_ENV) $(PY) -m projector || true
	$(PROC) start gateway $(LOGS)/gateway.log -- env $(DIST_ENV) PORT=$(PORT) $(PY) -m gateway || true
	$(PROC) wait-http http://127.0.0.1:$(PORT)/healthz 60
	@echo "up: http://127.0.0.1:$(PORT)/  (logs in $(LOGS)/; make down stops everything)"

down:
	-$(PROC) stop gateway
	-$(PROC) stop projector
	-$(PROC) stop processor
	$(SERVICES) down

status:
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
