# The two commands a newcomer needs: `make demo` and `make test`. Both set up a fresh machine first.
SHELL := /bin/bash
VENV := .venv/bin

.PHONY: bootstrap test lint unit demo cluster-up cluster-down crds

bootstrap:
	@bash scripts/bootstrap.sh

lint: bootstrap
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy
	$(VENV)/lint-imports
	$(VENV)/python -m rollwise.api.crdgen --check
	bash charts/sync-crds.sh --check

# Everything CI runs: lint, then every test against the real local cluster.
test: lint
	$(VENV)/python -m pytest

unit: bootstrap
	$(VENV)/python -m pytest tests/unit

demo: bootstrap
	$(VENV)/python -m e2e.demo

cluster-up: bootstrap
	$(VENV)/python -m e2e.cluster up

cluster-down:
	$(VENV)/python -m e2e.cluster down

crds: bootstrap
	$(VENV)/python -m rollwise.api.crdgen
