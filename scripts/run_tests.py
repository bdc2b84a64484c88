"""`make test`'s pytest: two sessions at once, so the suite's wall time is the longer one's.

The cluster session (tests/cluster, tests/integration, and the serving tests that build images or
the venvs the cluster's user images share: one builder of each cache at a time) spends most of its
time waiting for pods, rollouts and Prometheus; the other session (tests/unit and the rest of
tests/serving) is CPU work that needs no cluster. Each session has its own namespace prefix and
operator (tests/conftest.py), so neither sees the other's objects.

The cluster session prints as it runs; the other's output is kept in a file and printed when both
are done, whole if it failed, its summary line if it passed. Exit status: non-zero if either failed.
Extra arguments go to both sessions (e.g. ``-x``, ``-k``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_CACHES = [
    "tests/serving/test_image.py",  # docker builds from the wheelhouse the cluster's images use
    "tests/serving/test_proxy_openai.py",  # the llama-cpp-python venv the llama user image shares
    "tests/serving/test_proxy_peers.py",  # the MLServer venv the mlserver user image shares
]
CLUSTER = ["tests/cluster", "tests/integration", *SHARED_CACHES]
LOCAL = ["tests/unit", "tests/serving", *(f"--ignore={p}" for p in SHARED_CACHES)]


def main(argv: list[str]) -> int:
    python = str(REPO / ".venv" / "bin" / "python")
    started = time.monotonic()
    with tempfile.NamedTemporaryFile("w+b", prefix="rollwise-tests-local-", suffix=".log") as log:
        local = subprocess.Popen(
            [python, "-m", "pytest", *LOCAL, "--durations=25", *argv],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "PYTEST_ADDOPTS": os.environ.get("PYTEST_ADDOPTS", "") + " -p no:cacheprovider",
            },
        )
        print(
            f"[tests] tests/unit and tests/serving run beside this session (pid {local.pid}); "
            "their output follows it"
        )
        sys.stdout.flush()
        try:
            cluster = subprocess.run(
                [python, "-m", "pytest", *CLUSTER, "--durations=40", *argv], cwd=REPO, check=False
            )
        except KeyboardInterrupt:
            local.terminate()
            raise
        local_code = local.wait()
        log.seek(0)
        text = log.read().decode(errors="replace")
    print(f"\n[tests] ---- tests/unit and tests/serving (exit {local_code}) ----")
    if local_code == 0:
        lines = text.splitlines()
        start = next((i for i, line in enumerate(lines) if "slowest" in line), max(len(lines) - 40, 0))
        print("\n".join(lines[start:]))
    else:
        print(text)
    minutes = (time.monotonic() - started) / 60
    print(
        f"[tests] cluster session exit {cluster.returncode}, local session exit {local_code}, "
        f"{minutes:.1f} min"
    )
    return 0 if cluster.returncode == 0 and local_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
