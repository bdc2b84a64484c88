#!/usr/bin/env bash
# One-time (idempotent) set-up of a fresh machine: Debian packages, the Python virtualenv and the
# local cluster's binaries. Every step is skipped when already done, so `make test` stays quick.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"

APT_PACKAGES=(docker.io debootstrap containerd runc containernetworking-plugins prometheus redis-server
  wrk iptables conntrack socat ethtool iproute2 openssl)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "[bootstrap] apt-get install ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian packages ship services that would start on install elsewhere; here nothing starts them
# (no systemd), and the harness runs its own instances on its own ports.

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv" >&2
  "$PY" -m venv .venv
fi
stamp=".venv/.rollwise-deps-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[bootstrap] pip install -e .[dev]" >&2
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e ".[dev]"
  rm -f .venv/.rollwise-deps-*; touch "$stamp"
fi

bash e2e/build-binaries.sh all
