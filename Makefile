# `make test` is the README's test command and what .ci/run calls: it installs what it needs
# (scripts/install-deps.sh) and runs lint, types and the whole test suite.
PY := .venv/bin/python

.PHONY: test deps binaries lint unit demo conformance
deps:
	bash scripts/install-deps.sh

# The real control plane and Helm, built from their Go modules (cached by version in
# ~/.cache/portico/bin; a no-op when there): lab/controlplane/binaries.py.
binaries: deps
	$(PY) -m lab.controlplane.binaries

# Import contracts (.importlinter): layers, independent components, pure cores, no by-name
# imports; scripts/importrules.py holds the project's own contract type.
lint: deps
	$(PY) -m ruff check portico common lb speaker ingress lab tests bench scripts
	$(PY) -m mypy
	PYTHONPATH=scripts .venv/bin/lint-imports --no-cache

test: deps binaries lint
	$(PY) -m pytest -q -ra --durations=15 tests

unit: deps
	$(PY) -m pytest -q -ra tests/unit

# The lab demo (README "Quick start"): needs root for network namespaces.
demo: deps binaries
	$(PY) -m lab.demo

# The Gateway API conformance suite (v1.6.3, built by `make binaries`) against Portico on the
# lab cluster (root): lab/gateway_conformance.py. ARGS: e.g. --run-test NAME, --skip-tests A,B.
conformance: deps binaries
	$(PY) -m lab.gateway_conformance $(ARGS)
