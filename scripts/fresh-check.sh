#!/usr/bin/env bash
# What a new machine sees: the README's two commands in a throwaway clone of this checkout's HEAD,
# with an empty ~/.cache/rollwise and empty pip and uv caches, so a green run here can no longer
# hide a version or an artifact that only this machine's caches kept.
#   scripts/fresh-check.sh                # make demo, then make test (cold: see the README's Quickstart)
#   scripts/fresh-check.sh --keep-go      # reuse the built Kubernetes/etcd/kwok/helm/CoreDNS binaries
#                                         # (keyed by version; they depend on no Python package)
#   scripts/fresh-check.sh --test-only    # make test alone
# Each command's wall time is printed at the end. The local cluster is shared by the machine, so
# any running one is stopped first. Debian packages and Go's module cache stay (what the machine
# has); everything the project itself builds or resolves starts empty.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
keep_go=0 demo=1
for arg in "$@"; do
  case "$arg" in
    --keep-go) keep_go=1 ;;
    --test-only) demo=0 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "fresh-check: unknown argument '$arg'; use --keep-go, --test-only or --help" >&2; exit 2 ;;
  esac
done

work="$(mktemp -d "${TMPDIR:-/tmp}/rollwise-fresh.XXXXXX")"
cache="$work/cache"
mkdir -p "$cache"
if [ "$keep_go" = 1 ] && [ -d "$HOME/.cache/rollwise" ]; then
  for d in "$HOME"/.cache/rollwise/{k8s,etcd,kwok,helm,coredns}-*; do
    [ -d "$d" ] && ln -s "$d" "$cache/$(basename "$d")"
  done
fi
# The cluster's state lives under the cache too; stop the one this machine runs. Docker's own
# store outlives the cache, so the project's images go too (all are rebuilt from the clone).
if [ -x "$here/.venv/bin/python" ]; then (cd "$here" && .venv/bin/python -m e2e.cluster down) || true; fi
if /usr/bin/docker info >/dev/null 2>&1; then
  /usr/bin/docker images --format '{{.Repository}}:{{.Tag}}' | grep '^rollwise/' | xargs -r /usr/bin/docker rmi -f >/dev/null || true
fi

git clone -q "$here" "$work/rollwise"
[ -d "$here/../shared" ] && cp -r "$here/../shared" "$work/shared"
cd "$work/rollwise"
export ROLLWISE_CACHE="$cache" PIP_CACHE_DIR="$work/pip-cache" UV_CACHE_DIR="$work/uv-cache" PIP_NO_CACHE_DIR=1
echo "[fresh-check] clone $work/rollwise at $(git rev-parse --short HEAD), ROLLWISE_CACHE=$cache" >&2

times=()
run() {
  local start; start=$(date +%s)
  echo "[fresh-check] $*" >&2
  if "$@"; then times+=("$* passed in $(( $(date +%s) - start )) s"); else
    times+=("$* FAILED after $(( $(date +%s) - start )) s"); printf '[fresh-check] %s\n' "${times[@]}" >&2; exit 1
  fi
}
[ "$demo" = 1 ] && run make demo
run make test
.venv/bin/python -m e2e.cluster down || true
printf '[fresh-check] %s\n' "${times[@]}" >&2
echo "[fresh-check] the clone and its caches are in $work (remove it when done)" >&2
