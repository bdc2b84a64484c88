# Shared start of operator/build-image.sh and serving-image/build-image.sh; source it after setting
# IMAGE (e.g. IMAGE=serving) and, for a variant, TAG_SUFFIX (e.g. -batch: rollwise/serving:<version>-batch).
# Sets repo, py, docker, tag, import, ctx (a build context removed on
# exit) and log(); parses --import, --tag TAG and --help; makes sure the base image exists.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
py="$repo/.venv/bin/python"
docker=/usr/bin/docker  # another docker earlier on PATH lacks buildx
[ -x "$py" ] || { echo "build-image: $py missing; run scripts/bootstrap.sh first" >&2; exit 2; }

version="$("$py" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
  "$repo/pyproject.toml")"
tag="rollwise/$IMAGE:$version${TAG_SUFFIX:-}"
import=0
while [ $# -gt 0 ]; do
  case "$1" in
    --import) import=1 ;;
    --tag) tag="${2:?--tag needs a value, e.g. --tag rollwise/$IMAGE:dev}"; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "build-image: unknown argument '$1'; use --import, --tag TAG or --help" >&2; exit 2 ;;
  esac
  shift
done

log() { printf '[build-image] %s\n' "$*" >&2; }

# Binary wheels for a hashed requirements file (e2e/wheelhouse.py), for the image's CPython 3.11.
download_wheels() {
  "$repo/.venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --require-hashes \
    --only-binary=:all: --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    --python-version 3.11 --implementation cp --dest "$2" -r "$1"
}

# The project's wheel, built with the venv's locked setuptools (no isolated build env fetched).
project_wheel() {
  "$repo/.venv/bin/pip" wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation \
    --wheel-dir "$2" "$1"
}

cd "$repo"
"$py" -m e2e.images python-base >/dev/null

ctx="$(mktemp -d "${TMPDIR:-/tmp}/rollwise-$IMAGE-image.XXXXXX")"
# A rebuilt tag leaves its previous image dangling; tests rebuild often and the disk is shared,
# so remove the image this build replaced (a no-op when the build reused it, or when in use).
replaced="$("$docker" image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)"
drop_replaced() {
  local now; now="$("$docker" image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)"
  if [ -n "$replaced" ] && [ "$replaced" != "$now" ]; then "$docker" rmi "$replaced" >/dev/null 2>&1 || true; fi
}
trap 'rm -rf "$ctx"; drop_replaced' EXIT
