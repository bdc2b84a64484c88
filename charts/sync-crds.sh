#!/usr/bin/env bash
# Copies the generated CRDs (crds/*.yaml, written by `python -m rollwise.api.crdgen`) into the
# chart's crds/ directory, which Helm installs before the templates. The chart's only hand-written
# CRD file, kopf-peerings.yaml, is kept. With --check nothing is written: the exit status is 1 and
# the differing files are listed when the chart is stale (tests/unit/test_chart.py checks the same).
#   charts/sync-crds.sh          # after regenerating crds/
#   charts/sync-crds.sh --check  # in CI
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
src="$repo/crds"
dst="$repo/charts/rollwise/crds"
keep="kopf-peerings.yaml"

shopt -s nullglob
generated=("$src"/*.yaml)
if [ "${#generated[@]}" -eq 0 ]; then
  echo "sync-crds: no CRDs in $src; generate them first: .venv/bin/python -m rollwise.api.crdgen" >&2
  exit 2
fi
if [ -e "$src/$keep" ]; then
  echo "sync-crds: $src/$keep clashes with the chart's Kopf peering CRDs; rename one of them" >&2
  exit 2
fi

if [ "${1:-}" = "--check" ]; then
  stale=0
  for f in "${generated[@]}"; do
    cmp -s "$f" "$dst/$(basename "$f")" || { echo "stale: charts/rollwise/crds/$(basename "$f")" >&2; stale=1; }
  done
  for f in "$dst"/*.yaml; do
    name="$(basename "$f")"
    [ "$name" = "$keep" ] || [ -e "$src/$name" ] || { echo "extra: charts/rollwise/crds/$name" >&2; stale=1; }
  done
  [ "$stale" = 0 ] || echo "sync-crds: the chart's CRDs differ from crds/; run charts/sync-crds.sh" >&2
  exit "$stale"
fi

for f in "$dst"/*.yaml; do
  [ "$(basename "$f")" = "$keep" ] || rm -f "$f"
done
cp "${generated[@]}" "$dst/"
echo "sync-crds: copied ${#generated[@]} CRD file(s) into charts/rollwise/crds/" >&2
