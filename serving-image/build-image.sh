#!/usr/bin/env bash
# Builds the model server image rollwise/serving:<version> with no registry, and optionally
# imports it into the real node's containerd.
#   serving-image/build-image.sh              # build (version from pyproject.toml)
#   serving-image/build-image.sh --import     # build, then import into the node (cluster must be up)
#   serving-image/build-image.sh --tag T      # another tag
#   serving-image/build-image.sh --variant batch           # rollwise/serving:<version>-batch
#   serving-image/build-image.sh --variant batch,xgboost   # rollwise/serving:<version>-batch-xgboost
#   serving-image/build-image.sh --variant batch --tag T   # --tag names any build, variant or not
# A variant is the same server plus the extras it names (pyproject.toml): batch (rollwise-batch,
# pyarrow, pandas), xgboost, lightgbm; --variant repeats or takes a comma list, and the tag names
# them in that fixed order whatever order they were given in (serving-image/README.md, "Variants").
# Steps: the local base image rollwise/python:bookworm (e2e/images.py); a wheelhouse made on the
# host, because HTTPS from inside containers fails: the binary wheels uv.lock pins for the `serving`
# extra (e2e/wheelhouse.py; pip download checks every hash, and so does the install in the image)
# plus the project's own wheel; `docker build` of serving-image/Dockerfile
# on that context; a smoke check that the server starts as UID 65532 on a read-only root.
IMAGE=serving
# --variant is this script's own; the rest goes to the shared parser.
VARIANTS=(batch xgboost lightgbm)
# What each variant's smoke check imports, at build time and again in the finished image.
declare -A VARIANT_IMPORTS=(
  [batch]="pyarrow.parquet, pandas, rollwise_serving.batch"
  [xgboost]="xgboost, rollwise_serving.runtimes.xgboost"
  [lightgbm]="lightgbm, rollwise_serving.runtimes.lightgbm"
)
asked=()
rest=()
while [ $# -gt 0 ]; do
  case "$1" in
    --variant)
      [ $# -ge 2 ] || { echo "build-image: --variant needs a value: one of ${VARIANTS[*]}" >&2; exit 2; }
      IFS=, read -ra names <<< "$2"
      for name in "${names[@]}"; do
        [ -n "${VARIANT_IMPORTS[$name]+set}" ] || {
          echo "build-image: unknown variant '$name'; use ${VARIANTS[*]} (repeat --variant or join with commas)" >&2
          exit 2
        }
        asked+=("$name")
      done
      shift ;;
    *) rest+=("$1") ;;
  esac
  shift
done
extras=()
for name in "${VARIANTS[@]}"; do
  for a in "${asked[@]}"; do [ "$a" = "$name" ] && { extras+=("$name"); break; }; done
done
TAG_SUFFIX=""
imports=""
with=()
for name in "${extras[@]}"; do
  TAG_SUFFIX+="-$name"
  imports+=", ${VARIANT_IMPORTS[$name]}"
  with+=(--with "$name")
done
variant="${TAG_SUFFIX#-}"
source "$(dirname "$0")/../scripts/image-build-common.sh" "${rest[@]}"
# The serving extra's packages, and the variant's extras', exactly as uv.lock pins them, each
# with its hashes.
"$py" -m e2e.wheelhouse serving "${with[@]}" > "$ctx/requirements.txt"
log "wheelhouse for serving${variant:+ with $variant} ($(wc -l < "$ctx/requirements.txt") locked packages)"
download_wheels "$ctx/requirements.txt" "$ctx/wheels"
# The project's wheel from a copy of the sources, so nothing (build/, *.egg-info) lands in the
# shared working tree.
# Only the server and the contract it shares with the operator: the operator's package stays out.
mkdir -p "$ctx/src/contract" "$ctx/src/serving-image"
cp pyproject.toml README.md "$ctx/src/"
cp -r contract/rollwise_contract "$ctx/src/contract/"
cp -r serving-image/rollwise_serving "$ctx/src/serving-image/"
find "$ctx/src" -name __pycache__ -prune -exec rm -rf {} +
log "wheel for rollwise $version"
project_wheel "$ctx/src" "$ctx/wheels"
cp serving-image/Dockerfile "$ctx/Dockerfile"

"$py" - "$ctx" "$tag" "$version" "$variant" "$imports" <<'PY'
import sys
from pathlib import Path

from e2e import images

ctx, tag, version, variant, imports = Path(sys.argv[1]), *sys.argv[2:]
# The version, the variant and its imports go in as build args; docker_build takes none, so
# stamp them into the file.
dockerfile = ctx / "Dockerfile"
text = dockerfile.read_text()
for arg, value in {"VERSION": version, "VARIANT": variant, "VARIANT_IMPORTS": imports}.items():
    line = f"ARG {arg}=dev" if arg == "VERSION" else f'ARG {arg}=""'
    assert line in text, f"serving-image/Dockerfile lost its `{line}`"
    text = text.replace(line, f'ARG {arg}="{value}"')
dockerfile.write_text(text)
images.docker_build(ctx, tag)
PY

# Smoke check under the pod's constraints: UID 65532, read-only root, only /tmp writable. The
# variant's libraries must import there too (compiled code that writes next to itself would not),
# and a batch variant's scorer must start. tests/serving/test_image.py serves and scores with each.
log "smoke check $tag"
run_locked() {
  "$docker" run --rm --network none --read-only --tmpfs /tmp --user 65532:65532 \
    --cap-drop ALL --security-opt no-new-privileges "$@"
}
run_locked "$tag" --help >/dev/null
if [ -n "$imports" ]; then
  run_locked --entrypoint python3 "$tag" -c "import ${imports#, }"
fi
for name in "${extras[@]}"; do
  if [ "$name" = batch ]; then run_locked --entrypoint rollwise-batch "$tag" --help >/dev/null; fi
done
# With --import the last line is the reference by digest (tag@sha256:...), for the chart's
# servingImage.digest (batchImage.digest for --variant batch).
if [ "$import" = 1 ]; then
  "$py" -m e2e.images import "$tag"
else
  echo "$tag"
fi
