"""Model servers Rollwise did not build, as user images for the tests of `runtime.server` (#18).

Built the way our own images are, with no registry: `rollwise/python:bookworm`, wheels fetched on
the host with their hashes checked, installed in `docker build` without a network.
- `json-model`: a user's FastAPI JSON model (`e2e/testimages/json-model/`, bench/peers/fastapi.txt).
- `llama`: llama-cpp-python's OpenAI server (the lock `bench/peers/llama-server.txt`, its wheel
  compiled once by `scripts/llama_server_venv.py`) serving a tiny GGUF written here by `gguf`
  (`e2e/tiny_gguf.py`); `FIRST_TOKEN_DELAY_MS` makes a slower release.
- `mlserver`: MLServer with its sklearn runtime (bench/peers/mlserver.txt) serving the committed
  Iris model over OIP REST and gRPC; `MODEL_BROKEN=1` serves a runtime whose predictions fail.
- `kserve`: KServe's ModelServer (bench/peers/kserve.txt) with a custom predictor of the same
  model (`e2e/testimages/kserve/model.py`, the one the bench and the proxy tests run too).
Tags are `rollwise/user-NAME:<digest of the inputs>`, so an unchanged image is not rebuilt.

CLI: ``python -m e2e.user_images NAME [--import]`` prints the tag (by digest with --import).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from e2e import images, paths

TESTIMAGES = paths.REPO / "e2e" / "testimages"
PEERS = paths.REPO / "bench" / "peers"
LLAMA_LOCK = PEERS / "llama-server.txt"
IRIS = paths.REPO / "examples" / "models" / "iris-v1.joblib"
"""The committed Iris model MLServer and KServe serve, the bundled server's iris-v1."""
LLAMA_BUILD_ONLY = ("llama-cpp-python", "scikit-build-core")
"""The lock's entries that are not fetched as wheels: the compiled wheel, and what compiles it."""


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:12]


def _exists(tag: str) -> bool:
    images.ensure_dockerd()
    probe = [images.DOCKER, "image", "inspect", tag]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def json_model() -> str:
    return _from_lock("json-model", PEERS / "fastapi.txt", {})


def _download_wheels(requirements: list[str], dest: Path) -> None:
    """The locked wheels, hash-checked, for the image's Python (3.11, manylinux x86_64)."""
    dest.mkdir()
    req = dest.parent / "requirements.txt"
    req.write_text("\n".join(requirements) + "\n")
    subprocess.run(
        [
            str(paths.REPO / ".venv" / "bin" / "pip"), "download", "--quiet",
            "--disable-pip-version-check",
            "--no-deps", "--require-hashes", "--only-binary=:all:",
            "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
            "--python-version", "3.11", "--implementation", "cp", "--dest", str(dest),
            "-r", str(req),
        ],
        check=True,
    )  # fmt: skip
    req.unlink()


def _from_lock(
    name: str, lock: Path, files: dict[str, Path], context: Callable[[Path], None] | None = None
) -> str:
    """A user image of `e2e/testimages/NAME` with the venv of a bench/peers lock (`lock`), plus
    `files` (context name -> file); tagged by the digest of all of them. `context` adds more."""
    src = TESTIMAGES / name
    inputs = [lock.read_bytes(), *(f.read_bytes() for f in sorted(src.iterdir()))]
    inputs += [f"{k}:".encode() + v.read_bytes() for k, v in sorted(files.items())]
    tag = f"rollwise/user-{name}:{_digest(*inputs)}"
    if _exists(tag):
        return tag
    images.ensure_python_base()
    with tempfile.TemporaryDirectory(prefix=f"user-{name}-") as tmp:
        ctx = Path(tmp)
        for f in src.iterdir():
            shutil.copy(f, ctx / f.name)
        for dest, f in files.items():
            shutil.copy(f, ctx / dest)
        if context is not None:
            context(ctx)
        else:
            _download_wheels(list(_requirements(lock.read_text()).values()), ctx / "wheels")
        images.docker_build(ctx, tag)
        _prune(f"rollwise/user-{name}", tag)
    return tag


def _requirements(lock: str) -> dict[str, str]:
    """A hashed lock's entries by package name, each as its `name==version --hash=...` line."""
    return llama_server_venv().requirements(lock)  # type: ignore[no-any-return]


def llama_server_venv() -> Any:
    """scripts/llama_server_venv.py, a script of ours and not a package."""
    spec = importlib.util.spec_from_file_location(
        "llama_server_venv", paths.REPO / "scripts" / "llama_server_venv.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prune(repository: str, keep: str) -> None:
    """Remove this image's older builds: every rebuild otherwise leaves GBs behind, and the node's
    disk filling up taints it (disk pressure) in the middle of a test run."""
    listed = subprocess.run(
        [images.DOCKER, "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repository],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    stale = [t for t in listed.stdout.split() if t != keep]
    if stale:
        subprocess.run([images.DOCKER, "image", "rm", *stale], capture_output=True, check=False)


def llama() -> str:
    def context(ctx: Path) -> None:
        from e2e.tiny_gguf import write_tiny_llama  # noqa: PLC0415 - numpy and gguf only when built

        venv = llama_server_venv()
        python = venv.ensure()  # builds the llama-cpp-python wheel once, if missing
        entries = venv.requirements(LLAMA_LOCK.read_text())
        wheel = venv.wheel(python, entries[LLAMA_BUILD_ONLY[0]])
        _download_wheels([v for k, v in entries.items() if k not in LLAMA_BUILD_ONLY], ctx / "wheels")
        shutil.copy(wheel, ctx / "wheels" / wheel.name)
        write_tiny_llama(ctx / "tiny.gguf")

    return _from_lock("llama", LLAMA_LOCK, {}, context)


def mlserver() -> str:
    return _from_lock("mlserver", PEERS / "mlserver.txt", {"iris-v1.joblib": IRIS})


def kserve() -> str:
    return _from_lock("kserve", PEERS / "kserve.txt", {"iris-v1.joblib": IRIS})


BUILDERS = {"json-model": json_model, "llama": llama, "mlserver": mlserver, "kserve": kserve}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.user_images", description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=sorted(BUILDERS))
    parser.add_argument("--import", dest="into_node", action="store_true", help="import into the real node")
    args = parser.parse_args(argv)
    tag = BUILDERS[args.name]()
    print(images.import_into_node(tag) if args.into_node else tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
