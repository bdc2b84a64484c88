"""Running ``rollwise-proxy`` and the user servers it fronts, as real processes on loopback."""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.serving.conftest import REPO, Server, free_port, stop, wait_for

PROXY = REPO / ".venv" / "bin" / "rollwise-proxy"
UVICORN = REPO / ".venv" / "bin" / "uvicorn"


class Processes:
    """Processes started by a test, stopped by their PIDs at its end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.running: list[Server] = []

    def start(self, argv: list[str], port: int, ready: str, *, cwd: Path | None = None) -> Server:
        log = self.tmp / f"proc-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(os.environ),
                cwd=cwd,
                start_new_session=True,
            )
        server = Server(proc, port, log, argv)
        self.running.append(server)
        wait_for(
            lambda: proc.poll() is None and httpx.get(server.url + ready, timeout=1).status_code == 200,
            60,
            f"{Path(argv[0]).name} on port {port} to answer GET {ready}",
            log,
        )
        return server

    def proxy(
        self, upstream: str, protocol: str, *args: str, name: str = "iris", version: str = "v1"
    ) -> Server:
        port = free_port()
        argv = [str(PROXY), "--host", "127.0.0.1", "--port", str(port), "--upstream", upstream]
        argv += ["--protocol", protocol, "--name", name, "--version", version, *args]
        return self.start(argv, port, "/rollwise/ready")

    def user_app(self, source: str, *args: str, ready: str = "/") -> Server:
        """A user's own FastAPI model (``app`` in ``source``) under uvicorn."""
        port = free_port()
        module = self.tmp / f"user_app_{port}.py"
        module.write_text(textwrap.dedent(source))
        argv = [str(UVICORN), f"{module.stem}:app", "--app-dir", str(self.tmp), "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--log-level", "warning", *args]
        return self.start(argv, port, ready)

    def stop_all(self) -> None:
        for server in reversed(self.running):
            stop(server.proc)


def processes(tmp_path: Path) -> Iterator[Processes]:
    """The body of each test module's ``procs`` fixture."""
    factory = Processes(tmp_path)
    yield factory
    factory.stop_all()
