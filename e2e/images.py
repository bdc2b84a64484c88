"""Container images for the local cluster, built with no registry.

Nothing can be pulled on our machines, so every image starts from a root filesystem made by
``debootstrap`` and ``docker import``: ``rollwise/base:bookworm`` (minbase) and
``rollwise/python:bookworm`` (minbase + Debian's python3.11, which matches the host's CPython, so
wheels built on the host install unchanged). The pod sandbox image is our own static ``pause``.
Images reach the real node by ``docker save`` | ``ctr import`` into its containerd.

Docker runs with ``--iptables=false --bridge=none``: builds need no network (Python images install
from a host-made wheelhouse), and the cluster's own iptables rules stay the only ones on the host.
Containers that need a network use ``--network host``.

CLI: ``python -m e2e.images base|python-base|pause|import TAG``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from e2e import paths

DOCKER = "/usr/bin/docker"  # the `docker` earlier on PATH lacks buildx
CTR = "/usr/bin/ctr"
BASE_TAG = "rollwise/base:bookworm"
PYTHON_TAG = "rollwise/python:bookworm"
PAUSE_TAG = "rollwise/pause:3.10"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
# Bump the number when the package list changes. The month rebuilds the cached root filesystems
# (with that month's Debian security updates) at least monthly; within a month every build reuses
# one, so two builds from the same lock install the same packages.
ROOTFS_KEY = f"bookworm-2-{time.strftime('%Y-%m', time.gmtime())}"
PYTHON_PACKAGES = "python3,python3-venv,ca-certificates,libgomp1"

IMAGES_CACHE = paths.CACHE / "images"
DOCKERD_LOG = paths.CACHE / "dockerd.log"


def log(msg: str) -> None:
    print(f"[images] {msg}", file=sys.stderr, flush=True)


def run(*argv: str, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with its output so the cause is in the test log."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-4000:]}"
        )
    if not quiet and proc.stdout.strip():
        log(proc.stdout.strip().splitlines()[-1])
    return proc


def docker_ok() -> bool:
    return subprocess.run([DOCKER, "info"], capture_output=True, check=False).returncode == 0


def ensure_dockerd(timeout_seconds: float = 60) -> None:
    """Start Docker's daemon by hand (no systemd here) unless one already answers."""
    if not Path(DOCKER).exists():
        raise RuntimeError(f"{DOCKER} not found: run scripts/bootstrap.sh (apt-get install docker.io)")
    if docker_ok():
        return
    DOCKERD_LOG.parent.mkdir(parents=True, exist_ok=True)
    log(f"starting dockerd (log: {DOCKERD_LOG})")
    with DOCKERD_LOG.open("ab") as out:
        subprocess.Popen(
            ["dockerd", "--iptables=false", "--ip-forward=false", "--bridge=none"],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if docker_ok():
            return
        time.sleep(0.5)
    tail = DOCKERD_LOG.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"dockerd did not answer within {timeout_seconds}s; log tail:\n{tail}")


def image_exists(tag: str) -> bool:
    return subprocess.run([DOCKER, "image", "inspect", tag], capture_output=True, check=False).returncode == 0


def _rootfs_tar(name: str, include: str | None) -> Path:
    """A debootstrapped bookworm root filesystem as a tarball, cached by ROOTFS_KEY."""
    tar = IMAGES_CACHE / f"{name}-{ROOTFS_KEY}.tar"
    if tar.exists():
        return tar
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap not found: run scripts/bootstrap.sh (apt-get install debootstrap)")
    IMAGES_CACHE.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"rootfs-{name}-", dir=IMAGES_CACHE) as tmp:
        root = Path(tmp) / "root"
        argv = ["debootstrap", "--variant=minbase"]
        if include:
            argv.append(f"--include={include}")
        log(f"debootstrap {name} (about a minute)")
        run(*argv, "bookworm", str(root), DEBIAN_MIRROR, quiet=True)
        _apply_security_updates(root)
        packages = run("chroot", str(root), "dpkg-query", "-W", "-f", "${Package} ${Version}\\n", quiet=True)
        (root / "etc" / "rollwise-packages.txt").write_text(packages.stdout)
        tar.with_suffix(".packages.txt").write_text(packages.stdout)
        # Trim what an image never needs: apt lists, docs, caches.
        for sub in ("var/lib/apt/lists", "usr/share/doc", "usr/share/man", "var/cache/apt"):
            shutil.rmtree(root / sub, ignore_errors=True)
        partial = tar.with_suffix(".partial")
        run("tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), ".", quiet=True)
        partial.rename(tar)
    log(f"{name} root filesystem ready in {time.monotonic() - started:.0f}s")
    return tar


def _apply_security_updates(root: Path) -> None:
    """debootstrap installs bookworm as released; bring in bookworm-updates and bookworm-security."""
    (root / "etc" / "apt" / "sources.list").write_text(
        f"deb {DEBIAN_MIRROR} bookworm main\n"
        f"deb {DEBIAN_MIRROR} bookworm-updates main\n"
        f"deb {SECURITY_MIRROR} bookworm-security main\n"
    )
    env = ["env", "DEBIAN_FRONTEND=noninteractive"]
    run("chroot", str(root), *env, "apt-get", "-qq", "update", quiet=True)
    run("chroot", str(root), *env, "apt-get", "-qq", "-y", "upgrade", quiet=True)
    run("chroot", str(root), "apt-get", "clean", quiet=True)


def _rootfs_key_of(tag: str) -> str | None:
    proc = subprocess.run(
        [DOCKER, "image", "inspect", "-f", '{{index .Config.Labels "dev.rollwise.rootfs"}}', tag],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return proc.stdout.strip() if proc.returncode == 0 else None


def import_rootfs(tag: str, name: str, include: str | None) -> str:
    """The base image, re-imported when its root filesystem's key (package list, month) moved on."""
    ensure_dockerd()
    if _rootfs_key_of(tag) == ROOTFS_KEY:
        return tag
    tar = _rootfs_tar(name, include)
    changes = ["--change", 'CMD ["/bin/bash"]', "--change", f"LABEL dev.rollwise.rootfs={ROOTFS_KEY}"]
    run(DOCKER, "import", *changes, str(tar), tag, quiet=True)
    log(f"imported {tag}")
    return tag


def ensure_base_image() -> str:
    return import_rootfs(BASE_TAG, "base", None)


def ensure_python_base() -> str:
    return import_rootfs(PYTHON_TAG, "python", PYTHON_PACKAGES)


def docker_build(context_dir: Path, tag: str, dockerfile: Path | None = None) -> str:
    """Build with host networking (the daemon has no bridge; builds install from local files)."""
    ensure_dockerd()
    argv = [DOCKER, "build", "--network", "host", "-t", tag]
    if dockerfile is not None:
        argv += ["-f", str(dockerfile)]
    argv.append(str(context_dir))
    log(f"docker build {tag}")
    run(*argv, quiet=True)
    return tag


def ensure_pause_image() -> str:
    """The pod sandbox image: a static Go binary that waits for a signal, FROM scratch."""
    ensure_dockerd()
    if image_exists(PAUSE_TAG):
        return PAUSE_TAG
    with tempfile.TemporaryDirectory(prefix="pause-") as tmp:
        ctx = Path(tmp)
        src = paths.REPO / "e2e" / "pause"
        shutil.copy(src / "main.go", ctx / "main.go")
        subprocess.run(["go", "mod", "init", "example.local/pause"], cwd=ctx, capture_output=True, check=True)
        build = subprocess.run(
            ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", "pause", "."],
            cwd=ctx,
            capture_output=True,
            text=True,
            env={**_go_env(), "CGO_ENABLED": "0"},
            check=False,
        )
        if build.returncode != 0:
            raise RuntimeError(f"building pause failed:\n{build.stderr}")
        (ctx / "Dockerfile").write_text('FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n')
        docker_build(ctx, PAUSE_TAG)
    return PAUSE_TAG


def _go_env() -> dict[str, str]:
    return {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}


def import_into_node(tag: str) -> str:
    """Copy an image from Docker into the real node's containerd (namespace k8s.io).

    Returns ``tag@sha256:...``, the reference by digest. The image is also named by digest in
    containerd, as a registry pull would leave it, so the kubelet finds a pod's ``image: tag@digest``
    without a registry."""
    if not paths.CONTAINERD_SOCK.exists():
        raise RuntimeError(
            f"the real node's containerd is not running ({paths.CONTAINERD_SOCK} missing): "
            "run `python -m e2e.cluster up` first"
        )
    ensure_dockerd()
    with tempfile.TemporaryDirectory(prefix="img-") as tmp:
        archive = Path(tmp) / "image.tar"
        run(DOCKER, "save", "-o", str(archive), tag, quiet=True)
        run(
            CTR,
            "--address",
            str(paths.CONTAINERD_SOCK),
            "-n",
            "k8s.io",
            "images",
            "import",
            str(archive),
            quiet=True,
        )
    ctr = [CTR, "--address", str(paths.CONTAINERD_SOCK), "-n", "k8s.io", "images"]
    # containerd names images as a registry would: docker.io/ for a name with no registry host.
    name = tag if "." in tag.split("/", maxsplit=1)[0] else f"docker.io/{tag}"
    listed = run(*ctr, "ls", f"name=={name}", quiet=True).stdout.splitlines()[1:]
    digest = next((col for col in listed[0].split() if col.startswith("sha256:")), None) if listed else None
    if digest is None:
        raise RuntimeError(f"{name} is not in the node's containerd after the import: {listed}")
    run(*ctr, "tag", "--force", name, f"{name.rsplit(':', 1)[0]}@{digest}", quiet=True)
    log(f"imported {tag} into the node as {tag}@{digest}")
    return f"{tag}@{digest}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.images", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("base", help=f"build {BASE_TAG}")
    sub.add_parser("python-base", help=f"build {PYTHON_TAG}")
    sub.add_parser("pause", help=f"build {PAUSE_TAG}")
    imp = sub.add_parser("import", help="import a Docker image into the real node's containerd")
    imp.add_argument("tag")
    args = parser.parse_args(argv)
    if args.cmd == "base":
        print(ensure_base_image())
    elif args.cmd == "python-base":
        print(ensure_python_base())
    elif args.cmd == "pause":
        print(ensure_pause_image())
    else:
        print(import_into_node(args.tag))
    return 0


if __name__ == "__main__":
    sys.exit(main())
