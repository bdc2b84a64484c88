# The two commands a newcomer needs: `make demo` and `make test`. Both set up a fresh machine first.
SHELL := /bin/bash
VENV := .venv/bin

.PHONY: bootstrap test lint unit demo cluster-up cluster-down crds lock models fresh-check

bootstrap:
	@bash scripts/bootstrap.sh

lint: bootstrap
	@$(VENV)/uv lock --check --quiet || { echo "uv.lock is stale: pyproject.toml changed and the lock did not; run \`make lock\` and commit uv.lock" >&2; exit 1; }
	$(VENV)/python bench/peers/lock.py --check
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy
	$(VENV)/lint-imports
	$(VENV)/python -m rollwise.api.crdgen --check
	$(VENV)/python scripts/oip_codegen.py --check
	bash charts/sync-crds.sh --check

# Everything CI runs: lint, then every test against the real local cluster, in two sessions at
# once (scripts/run_tests.py: the cluster's tests beside the CPU-bound ones that need none).
test: lint
	$(VENV)/python scripts/run_tests.py

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

# Refresh every lock: uv.lock (the venv and both images) and the benchmark peers' bench/peers/*.txt.
# Keeps every pinned version that still satisfies pyproject.toml; `make lock UPGRADE=1` moves all.
lock: bootstrap
	$(VENV)/uv lock $(if $(UPGRADE),--upgrade)
	$(VENV)/python bench/peers/lock.py $(if $(UPGRADE),--upgrade)

# Remake the committed example artifacts (examples/models/) and re-pin every digest that changed.
models: bootstrap
	$(VENV)/python serving-image/make_example_models.py --repin

# The README's two commands in a throwaway clone, with empty caches: what a new machine sees.
fresh-check:
	bash scripts/fresh-check.sh
