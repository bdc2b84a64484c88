"""Lock the benchmark peers' virtualenvs: each bench/peers/NAME.in to NAME.txt, with hashes.

    python bench/peers/lock.py [--upgrade]   # make lock
    python bench/peers/lock.py --check       # make lint: fails when a .in changed and its .txt did not

The peers (KServe, MLServer) cannot share the project's uv.lock: their pins conflict with ours. Each
.txt records the digest of the .in it was made from, so a stale lock is caught without a network.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
UV = HERE.parent.parent / ".venv" / "bin" / "uv"


def digest_line(source: Path) -> str:
    return f"# locked from {source.name} sha256 {hashlib.sha256(source.read_bytes()).hexdigest()}"


def lock(source: Path, upgrade: bool) -> None:
    target = source.with_suffix(".txt")
    argv = [str(UV), "pip", "compile", "--quiet", "--generate-hashes", "--no-header"]
    argv += [
        "--python-version",
        "3.11",
        "--python-platform",
        "x86_64-manylinux_2_28",
        str(source),
        "-o",
        str(target),
    ]
    subprocess.run([*argv, *(["--upgrade"] if upgrade else [])], check=True)
    target.write_text(digest_line(source) + "\n" + target.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--upgrade", action="store_true")
    args = parser.parse_args(argv)
    stale = []
    for source in sorted(HERE.glob("*.in")):
        target = source.with_suffix(".txt")
        if args.check:
            if not target.exists() or not target.read_text().startswith(digest_line(source) + "\n"):
                stale.append(target.name)
        else:
            lock(source, args.upgrade)
    if stale:
        names = ", ".join(stale)
        print(f"bench/peers/{names} stale: its .in changed; run `make lock` and commit it", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
