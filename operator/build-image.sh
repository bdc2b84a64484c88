#!/usr/bin/env bash
# Builds the operator image rollwise/operator:<version> with no registry, and optionally imports
# it into the real node's containerd.
#   operator/build-image.sh              # build (version from pyproject.toml)
#   operator/build-image.sh --import     # build, then import into the node (cluster must be up)
#   operator/build-image.sh --tag T      # another tag
# Steps: the local base image rollwise/python:bookworm (e2e/images.py); a wheelhouse of the
# operator's runtime dependencies as uv.lock pins them (not the `serving` extra; hashes checked on
# download and on install) and its own wheel, made on the host, because HTTPS from inside containers
# fails; `docker build` of operator/Dockerfile on that context; a smoke check
# that the image imports the operator as UID 65532 on a read-only root filesystem.
IMAGE=operator
source "$(dirname "$0")/../scripts/image-build-common.sh" "$@"
# Build the wheel from a copy of the sources, so nothing (build/, *.egg-info) lands in the shared
# working tree. Only the operator package and the contract it shares with the server: the serving
# package ships in its own image.
mkdir -p "$ctx/src/operator" "$ctx/src/contract"
cp pyproject.toml README.md "$ctx/src/"
cp -r operator/rollwise "$ctx/src/operator/"
cp -r contract/rollwise_contract "$ctx/src/contract/"
find "$ctx/src" -name __pycache__ -prune -exec rm -rf {} +
"$py" -m e2e.wheelhouse operator > "$ctx/requirements.txt"
log "wheelhouse for rollwise $version ($(wc -l < "$ctx/requirements.txt") locked packages)"
download_wheels "$ctx/requirements.txt" "$ctx/wheels"
project_wheel "$ctx/src" "$ctx/wheels"
cp operator/Dockerfile "$ctx/Dockerfile"

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
  --cap-drop ALL --security-opt no-new-privileges --entrypoint python "$tag" \
  -c 'import os, kopf, rollwise; assert os.getuid() == 65532; print("rollwise", rollwise.__file__)' >&2
if "$docker" run --rm --network none --entrypoint sh "$tag" -c 'command -v rollwise-operator' >/dev/null; then :; else
  echo "build-image: rollwise-operator is not on PATH in $tag" >&2; exit 1
fi

# With --import the last line is the reference by digest (tag@sha256:...), for the chart's
# image.digest / servingImage.digest.
if [ "$import" = 1 ]; then
  "$py" -m e2e.images import "$tag"
else
  echo "$tag"
fi
