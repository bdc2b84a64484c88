#!/usr/bin/env bash
# Builds e2e/kstatus (kstatus from sigs.k8s.io/cli-utils, pinned in go.mod) from the Go module proxy
# into a versioned cache and prints the binary's path. Idempotent: a cached binary is reused.
#   ~/.cache/rollwise/kstatus-<cli-utils version>/kstatus
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="$(awk '$1 == "sigs.k8s.io/cli-utils" {print $2}' "$here/go.mod")"
[ -n "$version" ] || { echo "e2e/kstatus/go.mod: no sigs.k8s.io/cli-utils requirement" >&2; exit 1; }
out="${ROLLWISE_CACHE:-$HOME/.cache/rollwise}/kstatus-$version"
# A source change (main.go, go.mod, go.sum) is a new build: the cache key carries their digest.
digest="$(cat "$here/main.go" "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)"
if [ -x "$out/kstatus" ] && [ "$(cat "$out/source.sha256" 2>/dev/null)" = "$digest" ]; then
  echo "$out/kstatus"; exit 0
fi
echo "building kstatus (cli-utils $version) into $out" >&2
mkdir -p "$(dirname "$out")"
tmp="$(mktemp -d "$out.tmp.XXXXXX")"; trap 'rm -rf "$tmp"' EXIT
# -mod=readonly: go.sum pins every module; a missing sum is an error, never a silent upgrade.
(cd "$here" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0 \
  go build -trimpath -ldflags "-s -w" -o "$tmp/kstatus" .)
echo "$digest" > "$tmp/source.sha256"
chmod 755 "$tmp"
rm -rf "$out"; mv -T "$tmp" "$out"
echo "$out/kstatus"
