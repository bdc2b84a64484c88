"""The pinned, hashed requirements an image installs, read from uv.lock.

Both images install from a wheelhouse made on the host (HTTPS fails inside containers). What goes
in must be exactly what the lock says, not what PyPI serves on the day of the build, so this walks
``uv.lock`` from the image's roots — the ``serving`` extra for the model server (plus any extras a
variant adds with ``--with``, e.g. ``batch`` or ``xgboost``), the project's own dependencies for the
operator — and prints one ``name==version --hash=...`` line per package for
``pip download --require-hashes`` on the host and ``pip install --require-hashes`` in the image.
``uv export`` cannot do this: an extra's export carries the whole project's dependencies (the
operator's kopf and kubernetes in the model server). Markers are evaluated for the image's own
interpreter (Debian's CPython 3.11.2, where redis still needs async-timeout), not the host's.

CLI: ``python -m e2e.wheelhouse serving|operator [--with EXTRA]... [--image-tag TAG]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from packaging.markers import Marker

from e2e import images, paths

LOCK = paths.REPO / "uv.lock"
PROJECT = "rollwise"
# What `packaging.markers.default_environment()` computes, run by the image's own python3 (which
# has no `packaging`).
ENVIRONMENT_PROBE = """
import json, os, platform, sys
v = sys.implementation.version
iv = f"{v.major}.{v.minor}.{v.micro}"
if v.releaselevel != "final":
    iv += f"{v.releaselevel[0]}{v.serial}"
print(json.dumps({
    "implementation_name": sys.implementation.name, "implementation_version": iv,
    "os_name": os.name, "platform_machine": platform.machine(), "platform_release": platform.release(),
    "platform_system": platform.system(), "platform_version": platform.version(),
    "python_full_version": platform.python_version(), "platform_python_implementation":
    platform.python_implementation(), "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}))
"""


class LockError(RuntimeError):
    """uv.lock cannot give an image its requirements; the message names the package and the fix."""


def image_environment(tag: str) -> dict[str, str]:
    """The marker environment of the python3 inside an image."""
    out = subprocess.run(
        [
            "/usr/bin/docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "python3",
            tag,
            "-c",
            ENVIRONMENT_PROBE,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    env: dict[str, str] = json.loads(out)
    return env


def _applies(dep: Mapping[str, Any], env: Mapping[str, str]) -> bool:
    marker = dep.get("marker")
    return not marker or Marker(marker).evaluate({**env, "extra": ""})


def roots(lock: Mapping[str, Any], image: str, extras: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The image's direct requirements as the lock records them for the project.

    `extras` are more of the project's extras a serving image variant carries (`batch`, `xgboost`,
    `lightgbm`): their requirements join the `serving` extra's. The operator image takes none,
    and an extra the project does not declare fails naming the ones it does."""
    (project,) = [p for p in lock["package"] if p["name"] == PROJECT]
    declared = project.get("optional-dependencies", {})
    if image == "operator":
        if extras:
            raise LockError(f"the operator image takes no extras (got {', '.join(extras)}); drop --with")
        return list(project.get("dependencies", []))
    if image != "serving":
        raise LockError(f"unknown image {image!r}: use serving or operator")
    unknown = [e for e in extras if e not in declared]
    if unknown:
        raise LockError(
            f"unknown extra {', '.join(map(repr, unknown))}: use any of {', '.join(sorted(declared))} "
            "(pyproject.toml [project.optional-dependencies])"
        )
    out: list[dict[str, Any]] = []
    for extra in ["serving", *extras]:
        out += declared.get(extra, [])
    return out


def closure(
    lock: Mapping[str, Any], image: str, env: Mapping[str, str], extras: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Every locked package the image's roots need under `env`, sorted by name."""
    by_name = {p["name"]: p for p in lock["package"]}
    seen: dict[str, dict[str, Any]] = {}
    todo = [d for d in roots(lock, image, extras) if _applies(d, env)]
    while todo:
        dep = todo.pop()
        name, extras = dep["name"], dep.get("extra", [])
        package = by_name.get(name)
        if package is None:
            raise LockError(f"{name} is required but not in uv.lock: run `make lock`")
        key = name + "".join(f"[{e}]" for e in sorted(extras))
        if key in seen:
            continue
        seen[key] = package
        todo += [d for d in package.get("dependencies", []) if _applies(d, env)]
        for extra in extras:
            todo += [d for d in package.get("optional-dependencies", {}).get(extra, []) if _applies(d, env)]
    unique = {p["name"]: p for p in seen.values()}
    return [unique[n] for n in sorted(unique)]


def requirements(
    lock: Mapping[str, Any], image: str, env: Mapping[str, str], extras: Sequence[str] = ()
) -> str:
    """`name==version --hash=sha256:...` lines, one hash per locked wheel of that version."""
    lines = []
    for package in closure(lock, image, env, extras):
        wheels = package.get("wheels", [])
        if not wheels:
            raise LockError(
                f"{package['name']} {package['version']} has no wheel in uv.lock; the images install "
                "binary wheels only: pin a version that ships one in pyproject.toml, then `make lock`"
            )
        hashes = " ".join(f"--hash={w['hash']}" for w in wheels)
        lines.append(f"{package['name']}=={package['version']} {hashes}")
    return "\n".join(lines) + "\n"


def load_lock(path: Path = LOCK) -> dict[str, Any]:
    with path.open("rb") as f:
        return tomllib.load(f)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.wheelhouse", description=__doc__.split("\n")[0])
    parser.add_argument("image", choices=["serving", "operator"])
    parser.add_argument(
        "--with",
        dest="extras",
        action="append",
        default=[],
        metavar="EXTRA",
        help="another extra of the project the image carries (repeatable), e.g. --with batch",
    )
    parser.add_argument("--image-tag", default=images.PYTHON_TAG, help="whose python3 decides markers")
    args = parser.parse_args(argv)
    try:
        env = image_environment(args.image_tag)
        sys.stdout.write(requirements(load_lock(), args.image, env, args.extras))
    except LockError as e:
        print(f"wheelhouse: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
