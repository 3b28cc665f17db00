# Helios — every entry point a person or CI uses. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

help: ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

deps: ## install apt packages and tools (idempotent)
	scripts/deps.sh

test: deps ## install what tests need, start services, run every test, stop services
	scripts/test.sh

lint: ## cargo fmt --check and clippy -D warnings
	scripts/test.sh --lint-only

demo: deps ## run the whole system locally and show it working
	scripts/demo.sh start

demo-stop: ## stop everything `make demo` started (by PID)
	scripts/demo.sh stop

services: deps ## start Redis, PostgreSQL and the Kafka broker (Tansu) on loopback
	scripts/services.sh start

services-stop: ## stop the services started by `make services`
	scripts/services.sh stop

fuzz: ## fuzz the codec for a bounded time (FUZZ_SECONDS, default 60)
	scripts/fuzz.sh $${FUZZ_SECONDS:-60}

soak: deps ## long reliability runs (60 s broker outage, …), bounded by SOAK_SECONDS (default 900)
	scripts/soak.sh

bench: deps ## run the benchmarks and write bench/RESULTS.md figures
	scripts/bench.sh

.PHONY: help deps test lint demo demo-stop services services-stop fuzz soak bench
