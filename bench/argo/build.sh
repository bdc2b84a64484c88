#!/usr/bin/env bash
# Builds Argo Rollouts' controller (the peer of bench/operator_scale.py) from its Go module into
#   ~/.cache/rollwise/argo-rollouts-<ver>/rollouts-controller   and   .../crds/*.yaml
# Idempotent: skipped when both are cached. Prints the output directory on stdout.
#
# Why a wrapper module: `go install module@version` refuses modules whose go.mod has `replace`
# lines, and Argo pins client-go & co. with exactly such lines. They only take effect in the main
# module, so bench/argo/go.mod carries the same ones; this script checks they still match.
set -euo pipefail
ARGO_VERSION="${ARGO_VERSION:-v1.10.1}"
CACHE="${ROLLWISE_CACHE:-$HOME/.cache/rollwise}"
OUT="$CACHE/argo-rollouts-$ARGO_VERSION"
HERE="$(cd "$(dirname "$0")" && pwd)"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod

if [ -x "$OUT/rollouts-controller" ] && [ -f "$OUT/crds/rollout-crd.yaml" ]; then
  echo "$OUT"
  exit 0
fi

pinned="$(sed -n 's/^require github.com\/argoproj\/argo-rollouts \(v[^ ]*\)$/\1/p' "$HERE/go.mod")"
if [ "$pinned" != "$ARGO_VERSION" ]; then
  echo "bench/argo/go.mod requires argo-rollouts $pinned but ARGO_VERSION=$ARGO_VERSION; edit one of them" >&2
  exit 1
fi

info="$(go mod download -json "github.com/argoproj/argo-rollouts@$ARGO_VERSION")"
gomod="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p' <<<"$info")"
moddir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$info")"
test -s "$gomod" && test -d "$moddir"
replaces() { sed -n '/^replace (/,/^)/p' "$1" | grep '=>' | sed 's/^[[:space:]]*//' | sort; }
if ! diff <(replaces "$gomod") <(replaces "$HERE/go.mod") >&2; then
  echo "bench/argo/go.mod's replace lines differ from argo-rollouts $ARGO_VERSION's go.mod (above);" \
    "copy its replace block into bench/argo/go.mod" >&2
  exit 1
fi

echo "[argo] building rollouts-controller $ARGO_VERSION (cold: ~10 min on 2 cores)" >&2
work="$(mktemp -d)"
trap 'rm -rf "$work" "$OUT.tmp"' EXIT
# Build in a copy so a build never rewrites the checkout's go.mod/go.sum (go.sum pins every
# dependency's checksum; refresh it with `go list -deps -mod=mod <pkg>` after a version bump).
cp "$HERE/go.mod" "$HERE/go.sum" "$work/"
mkdir -p "$OUT.tmp/crds"
(
  cd "$work"
  v=github.com/argoproj/argo-rollouts/utils/version
  nice -n 10 env CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X $v.version=${ARGO_VERSION#v} -X $v.gitTag=$ARGO_VERSION -X $v.gitTreeState=clean" \
    -o "$OUT.tmp/rollouts-controller" github.com/argoproj/argo-rollouts/cmd/rollouts-controller
)
cp "$moddir"/manifests/crds/*-crd.yaml "$OUT.tmp/crds/"
chmod -R u+w "$OUT.tmp"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
"$OUT/rollouts-controller" --version >&2 || true
echo "$OUT"
