# Unilingo platform. Every target installs what it needs first (scripts/bootstrap.sh).
SHELL := /bin/bash
PY := .venv/bin/python
BOOTSTRAP := bash scripts/bootstrap.sh
export PYTHONUNBUFFERED := 1

.PHONY: run test test-unit bench dashboard redis sandbox api worker operator cluster token tools kind-up bootstrap clean

bootstrap:
	@$(BOOTSTRAP)

run: bootstrap
	@$(PY) -m devstack.run

test: bootstrap tools
	@$(PY) -m pytest -q -p no:cacheprovider tests

test-unit: bootstrap
	@$(PY) -m pytest -q -p no:cacheprovider tests/unit

bench: bootstrap
	@$(PY) -m bench

dashboard: bootstrap tools
	@$(PY) scripts/dashboard_preview.py

redis: bootstrap
	@$(PY) -m devstack.redis

sandbox: bootstrap
	@$(PY) -m sandbox

api: bootstrap
	@$(PY) -m api

worker: bootstrap
	@$(PY) -m workers

operator: bootstrap
	@$(PY) -m unilingo_operator

cluster: bootstrap tools
	@$(PY) -m devstack.cluster

token: bootstrap
	@$(PY) -m unilingo.tokens --user "$(USER)" $(if $(filter 1,$(ADMIN)),--admin,) $(if $(TIER),--tier "$(TIER)",)

tools:
	@bash scripts/tools.sh

kind-up:
	@bash scripts/kind-up.sh

clean:
	rm -rf .run .tools
