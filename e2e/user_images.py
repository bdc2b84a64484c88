"""Model servers Rollwise did not build, as user images for the tests of `runtime.server` (#18).

Built the way our own images are, with no registry: `rollwise/python:bookworm`, wheels fetched on
the host with their hashes checked, installed in `docker build` without a network.
- `json-model`: a standard-library JSON model (`e2e/testimages/json-model/`).
- `llama`: llama-cpp-python's OpenAI server (the lock `bench/peers/llama-server.txt`, its wheel
  compiled once by `scripts/llama_server_venv.py`) serving a tiny GGUF written here by `gguf`
  (`e2e/tiny_gguf.py`); `FIRST_TOKEN_DELAY_MS` makes a slower release.
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
from pathlib import Path
from typing import Any

from e2e import images, paths

TESTIMAGES = paths.REPO / "e2e" / "testimages"
LLAMA_LOCK = paths.REPO / "bench" / "peers" / "llama-server.txt"
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
    src = TESTIMAGES / "json-model"
    tag = f"rollwise/user-json-model:{_digest(*(f.read_bytes() for f in sorted(src.iterdir())))}"
    if not _exists(tag):
        images.ensure_python_base()
        images.docker_build(src, tag)
    return tag


def llama() -> str:
    spec = importlib.util.spec_from_file_location(
        "llama_server_venv", paths.REPO / "scripts" / "llama_server_venv.py"
    )
    assert spec is not None and spec.loader is not None
    llama_server_venv: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(llama_server_venv)  # a script of ours, not a package

    from e2e.tiny_gguf import write_tiny_llama  # noqa: PLC0415 - numpy and gguf only when built

    src = TESTIMAGES / "llama"
    lock = LLAMA_LOCK.read_text()
    tag = f"rollwise/user-llama:{_digest(lock.encode(), *(f.read_bytes() for f in sorted(src.iterdir())))}"
    if _exists(tag):
        return tag
    images.ensure_python_base()
    python = llama_server_venv.ensure()  # builds the llama-cpp-python wheel once, if missing
    entries = llama_server_venv.requirements(lock)
    wheel = llama_server_venv.wheel(python, entries[LLAMA_BUILD_ONLY[0]])
    with tempfile.TemporaryDirectory(prefix="user-llama-") as tmp:
        ctx = Path(tmp)
        for f in src.iterdir():
            shutil.copy(f, ctx / f.name)
        (ctx / "wheels").mkdir()
        req = ctx / "requirements.txt"
        req.write_text("\n".join(v for k, v in entries.items() if k not in LLAMA_BUILD_ONLY) + "\n")
        subprocess.run(
            [
                str(paths.REPO / ".venv" / "bin" / "pip"), "download", "--quiet",
                "--disable-pip-version-check",
                "--no-deps", "--require-hashes", "--only-binary=:all:",
                "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
                "--python-version", "3.11", "--implementation", "cp", "--dest", str(ctx / "wheels"),
                "-r", str(req),
            ],
            check=True,
        )  # fmt: skip
        req.unlink()
        shutil.copy(wheel, ctx / "wheels" / wheel.name)
        write_tiny_llama(ctx / "tiny.gguf")
        images.docker_build(ctx, tag)
    return tag


BUILDERS = {"json-model": json_model, "llama": llama}


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
