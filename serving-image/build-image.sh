#!/usr/bin/env bash
# Builds the model server image rollwise/serving:<version> with no registry, and optionally
# imports it into the real node's containerd.
#   serving-image/build-image.sh              # build (version from pyproject.toml)
#   serving-image/build-image.sh --import     # build, then import into the node (cluster must be up)
#   serving-image/build-image.sh --tag T      # another tag
# Steps: the local base image rollwise/python:bookworm (e2e/images.py); a wheelhouse made on the
# host, because HTTPS from inside containers fails: the binary wheels uv.lock pins for the `serving`
# extra (e2e/wheelhouse.py; pip download checks every hash, and so does the install in the image)
# plus the project's own wheel; `docker build` of serving-image/Dockerfile
# on that context; a smoke check that the server starts as UID 65532 on a read-only root.
IMAGE=serving
source "$(dirname "$0")/../scripts/image-build-common.sh" "$@"
# The serving extra's packages exactly as uv.lock pins them, each with its hashes.
"$py" -m e2e.wheelhouse serving > "$ctx/requirements.txt"
log "wheelhouse for the serving extra ($(wc -l < "$ctx/requirements.txt") locked packages)"
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

"$py" - "$ctx" "$tag" "$version" <<'PY'
import sys
from pathlib import Path

from e2e import images

ctx, tag, version = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
# The version label goes in as a build arg; docker_build takes none, so stamp it into the file.
dockerfile = ctx / "Dockerfile"
dockerfile.write_text(dockerfile.read_text().replace("ARG VERSION=dev", f"ARG VERSION={version}"))
images.docker_build(ctx, tag)
PY

# Smoke check under the pod's constraints: UID 65532, read-only root, only /tmp writable.
log "smoke check $tag"
"$docker" run --rm --network none --read-only --tmpfs /tmp --user 65532:65532 \
  --cap-drop ALL --security-opt no-new-privileges "$tag" --help >/dev/null
# With --import the last line is the reference by digest (tag@sha256:...), for the chart's
# image.digest / servingImage.digest.
if [ "$import" = 1 ]; then
  "$py" -m e2e.images import "$tag"
else
  echo "$tag"
fi
