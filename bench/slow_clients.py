"""Stalled uploads against the model servers: Rollwise vs KServe vs MLServer, side by side.

    .venv/bin/python bench/slow_clients.py [--stalled 200] [--duration 5] [--only NAME,...]

For each server (the same sklearn Iris targets as bench/serving.py, one worker, defaults):
1. wrk at concurrency 16 for `--duration` s: the baseline requests/s;
2. `--stalled` connections each send the headers of an inference request and one byte of its
   body, then nothing (`Content-Length: 1000`): wrk again, with them open;
3. with the stalls still open, SIGTERM: seconds to exit, and whether the log holds a traceback;
4. how many of the stalled connections were answered (and with what) before the shutdown.

Goal (issue #21): with 200 stalled uploads, requests/s stays within 10 % of the baseline and
SIGTERM exits in under 2 s with no traceback. Prints one row per server and the ratios.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import serving

STALL = (
    b"POST /v2/models/iris/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    b"content-length: 1000\r\n\r\n{"
)


@dataclass
class Row:
    name: str
    baseline_rps: float
    stalled_rps: float
    stall_answers: dict[str, int]
    exit_seconds: float
    exit_code: int | None
    tracebacks: int


def stall(port: int, n: int) -> list[socket.socket]:
    sockets = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(STALL)
        s.setblocking(False)
        sockets.append(s)
    return sockets


def answers(sockets: list[socket.socket]) -> dict[str, int]:
    """What the stalled connections got back so far: a status line, a close, or nothing yet."""
    out: dict[str, int] = {}
    for s in sockets:
        try:
            data = s.recv(64)
            key = data.split(b"\r\n", 1)[0].decode(errors="replace") if data else "closed"
        except BlockingIOError:
            key = "waiting"
        except OSError as err:
            key = type(err).__name__
        out[key] = out.get(key, 0) + 1
    return out


def measure(target: serving.Target, stalled: int, duration: int, script: Path) -> Row:
    port, proc, logfile = serving.start(target)
    sockets: list[socket.socket] = []
    try:
        url = f"http://127.0.0.1:{port}{target.path}"
        serving.check_answer(port, target.path)
        serving.wrk(url, 16, 1, script)  # warm-up
        baseline = serving.wrk(url, 16, duration, script)
        sockets = stall(port, stalled)
        time.sleep(0.5)
        loaded = serving.wrk(url, 16, duration, script)
        got = answers(sockets)
        started = time.monotonic()
        serving.terminate(proc, grace=30)
        took = time.monotonic() - started
    finally:
        for s in sockets:
            s.close()
        if proc.poll() is None:
            serving.terminate(proc, grace=0)
    return Row(
        target.name,
        baseline.rps,
        loaded.rps,
        got,
        took,
        proc.returncode,
        logfile.read_text(errors="replace").count("Traceback"),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stalled", type=int, default=200, help="stalled uploads held open (default 200)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--only", default="rollwise,kserve,mlserver", help="target names (bench/serving.py)")
    args = parser.parse_args()
    serving.WORK.mkdir(parents=True, exist_ok=True)
    for peer in serving.PEERS:
        serving.ensure_venv(peer)
    models = serving.ensure_models()
    script = serving.lua_script()
    rows = [
        measure(t, args.stalled, args.duration, script)
        for t in serving.targets(models, set(args.only.split(",")))
    ]
    print(
        f"\n{args.stalled} stalled uploads, wrk -c16 -d{args.duration}s, one worker each; "
        f"{os.cpu_count()} cores\n"
    )
    print(
        f"{'server':<12} {'req/s':>8} {'stalled':>8} {'ratio':>6} {'SIGTERM s':>9} {'exit':>5} "
        f"{'tracebacks':>10}  stalled got"
    )
    for r in rows:
        ratio = r.stalled_rps / r.baseline_rps if r.baseline_rps else 0.0
        print(
            f"{r.name:<12} {r.baseline_rps:>8.0f} {r.stalled_rps:>8.0f} {ratio:>6.2f} {r.exit_seconds:>9.2f} "
            f"{r.exit_code!s:>5} {r.tracebacks:>10}  {r.stall_answers}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
