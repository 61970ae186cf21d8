# Unilingo platform. Every target installs what it needs first (scripts/bootstrap.sh).
SHELL := /bin/bash
PY := .venv/bin/python
BOOTSTRAP := bash scripts/bootstrap.sh
export PYTHONUNBUFFERED := 1

.PHONY: run lint test test-kube test-unit bench dashboard redis sandbox api worker operator cluster image deploy token tools tools-control-plane kind-up bootstrap bootstrap-node clean

bootstrap:
	@$(BOOTSTRAP)

bootstrap-node:
	@$(BOOTSTRAP) node

run: bootstrap
	@$(PY) -m devstack.run

lint: bootstrap
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .
	@.venv/bin/mypy

# The kube tier last: it builds the node's tools if they are not cached, starts `make cluster`,
# runs `make image`, `make deploy` and `make test-kube`, then stops the node (scripts/kube-tier.sh).
test: bootstrap lint tools-control-plane
	@$(PY) -m pytest -q -p no:cacheprovider tests
	@bash scripts/kube-tier.sh

test-kube: bootstrap
	@UNILINGO_KUBE_TESTS=1 $(PY) -m pytest -q -p no:cacheprovider tests/kube

test-unit: bootstrap
	@$(PY) -m pytest -q -p no:cacheprovider tests/unit

bench: bootstrap
	@$(PY) -m bench

dashboard: bootstrap tools-control-plane
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

cluster: bootstrap-node tools
	@$(PY) -m devstack.cluster

image: bootstrap-node
	@bash scripts/image.sh

deploy: bootstrap-node tools
	@bash scripts/deploy.sh

token: bootstrap
	@$(PY) -m unilingo.tokens --user "$(USER)" $(if $(filter 1,$(ADMIN)),--admin,) $(if $(TIER),--tier "$(TIER)",)

tools:
	@bash scripts/tools.sh

# The tools of every tier but the kube tier's (its script builds the node's tools).
tools-control-plane:
	@bash scripts/tools.sh control-plane

kind-up:
	@bash scripts/kind-up.sh

clean:
	rm -rf .run .tools
