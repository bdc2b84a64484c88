#!/usr/bin/env bash
# Builds the model server image rollwise/serving:<version> with no registry, and optionally
# imports it into the real node's containerd.
#   serving-image/build-image.sh              # build (version from pyproject.toml)
#   serving-image/build-image.sh --import     # build, then import into the node (cluster must be up)
#   serving-image/build-image.sh --tag T      # another tag
# Steps: the local base image rollwise/python:bookworm (e2e/images.py); a wheelhouse made on the
# host, because HTTPS from inside containers fails: binary wheels of the `serving` extra (pip
# download, cached by pip) plus the project's own wheel; `docker build` of serving-image/Dockerfile
# on that context; a smoke check that the server starts as UID 65532 on a read-only root.
IMAGE=serving
source "$(dirname "$0")/../scripts/image-build-common.sh" "$@"
# The serving extra, exactly as pyproject.toml declares it.
"$py" -c 'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]["serving"]))' \
  "$repo/pyproject.toml" > "$ctx/requirements.txt"
log "wheelhouse for the serving extra ($(wc -l < "$ctx/requirements.txt") requirements)"
"$repo/.venv/bin/pip" download --quiet --disable-pip-version-check --only-binary=:all: \
  --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp \
  --dest "$ctx/wheels" -r "$ctx/requirements.txt"
# pip evaluates environment markers with the host's Python (3.11.7), not the image's Debian 3.11.2,
# so wheels needed only below 3.11.3 (redis -> async-timeout) must be fetched by name.
"$repo/.venv/bin/pip" download --quiet --disable-pip-version-check --only-binary=:all: --no-deps \
  --dest "$ctx/wheels" "async-timeout>=4.0.3"
# The project's wheel from a copy of the sources, so nothing (build/, *.egg-info) lands in the
# shared working tree.
mkdir -p "$ctx/src/operator" "$ctx/src/serving-image"
cp pyproject.toml README.md "$ctx/src/"
cp -r operator/rollwise "$ctx/src/operator/"
cp -r serving-image/rollwise_serving "$ctx/src/serving-image/"
find "$ctx/src" -name __pycache__ -prune -exec rm -rf {} +
log "wheel for rollwise $version"
"$repo/.venv/bin/pip" wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$ctx/wheels" "$ctx/src"
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
if [ "$import" = 1 ]; then
  "$py" -m e2e.images import "$tag"
fi
echo "$tag"
