#!/usr/bin/env bash
# Build Rollwise's images, load them into a kind cluster and install the chart.
# Needs: docker, kind, kubectl, helm, and internet access for kind's node image and Prometheus's chart.
# It cannot run on the project's own machines (no registry); use `python -m e2e.cluster up` there.
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION="$(python3 -c 'import tomllib;print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')"
kind get clusters | grep -qx rollwise || kind create cluster --config e2e/kind/kind-config.yaml
python3 -m e2e.images python-base                       # or any python:3.11-slim based image
operator/build-image.sh --tag "rollwise/operator:$VERSION"
serving-image/build-image.sh --tag "rollwise/serving:$VERSION"
kind load docker-image --name rollwise "rollwise/operator:$VERSION" "rollwise/serving:$VERSION"
helm upgrade --install rollwise charts/rollwise -n rollwise-system --create-namespace "$@"
kubectl -n rollwise-system rollout status deploy/rollwise --timeout=120s
