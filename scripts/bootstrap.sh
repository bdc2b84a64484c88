#!/usr/bin/env bash
# One-time (idempotent) set-up of a fresh machine: Debian packages, the Python virtualenv and the
# local cluster's binaries. Every step is skipped when already done, so `make test` stays quick.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"

APT_PACKAGES=(docker.io debootstrap containerd runc containernetworking-plugins prometheus redis-server
  wrk iptables conntrack socat ethtool iproute2 openssl
  # Java 17 for pyspark (tests/serving/test_spark.py, bench/batch.py: rollwise_serving.spark)
  openjdk-17-jre-headless)
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
CACHE="${ROLLWISE_CACHE:-$HOME/.cache/rollwise}"
# uv, pinned with its hash, in a venv of its own; it installs .venv exactly as uv.lock says (every
# package's hash checked, nothing resolved on the day). Python is the machine's, never downloaded.
uv_version="$(sed -n 's/^uv==\([^ ]*\) .*/\1/p' scripts/uv-requirements.txt)"
uv_home="$CACHE/uv-$uv_version"
if [ ! -x "$uv_home/bin/uv" ]; then
  echo "[bootstrap] installing uv $uv_version" >&2
  rm -rf "$uv_home"; mkdir -p "$CACHE"
  "$PY" -m venv "$uv_home"
  "$uv_home/bin/pip" install -q --disable-pip-version-check --no-deps --require-hashes -r scripts/uv-requirements.txt
fi
export UV_PYTHON_DOWNLOADS=never
stamp=".venv/.rollwise-lock-$(cat uv.lock pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[bootstrap] .venv from uv.lock (uv sync --frozen)" >&2
  "$uv_home/bin/uv" sync --quiet --frozen --extra dev --extra serving --python "$PY"
  rm -f .venv/.rollwise-lock-* .venv/.rollwise-deps-*; touch "$stamp"
fi

# llama.cpp's OpenAI server for the proxy's openai tests: its wheel is compiled once (minutes) into
# the cache, then reused; a changed bench/peers/llama-server.txt remakes the venv.
.venv/bin/python scripts/llama_server_venv.py >/dev/null

bash e2e/build-binaries.sh all
