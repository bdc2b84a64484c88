"""Fixtures that run real processes: the model server, redis-server, moto's S3, Prometheus.

Every process is started by us, on a free loopback port, and stopped by its PID. A binary that is
missing fails the test with the command that installs it: these tests prove features work, and a
skip would hide that they were never checked.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
SERVE = REPO / ".venv" / "bin" / "rollwise-serve"
sys.path.insert(0, str(REPO / "serving-image"))

import make_example_models  # noqa: E402 - serving-image is not a package


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_binary(name: str, install: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        pytest.fail(f"{name} is not installed; run `{install}` (scripts/bootstrap.sh does)", pytrace=False)
    return path


def wait_for(predicate: Any, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(0.05)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")


def stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Server:
    """A running ``rollwise-serve`` process."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.post(self.url + path, timeout=10, **kw)

    def metrics(self) -> str:
        return self.get("/metrics").text

    def sample(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 when absent)."""
        return metric_value(self.metrics(), name, **labels)

    def logs(self) -> str:
        return self.log.read_text()


def metric_value(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


class ServerFactory:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.running: list[Server] = []

    def start(self, *args: str, wait_ready: bool = True, env: dict[str, str] | None = None) -> Server:
        port = free_port()
        log = self.tmp / f"server-{port}.log"
        argv = [
            str(SERVE),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--cache-dir",
            str(self.tmp / "cache"),
            *args,
        ]
        full_env = {**os.environ, **(env or {})}
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
            )
        server = Server(proc, port, log, argv)
        self.running.append(server)
        wait_for(
            lambda: (
                proc.poll() is None
                and httpx.get(server.url + "/v2/health/live", timeout=1).status_code == 200
            ),
            30,
            f"rollwise-serve on port {port} to be live",
            log,
        )
        if wait_ready:
            wait_for(
                lambda: httpx.get(server.url + "/v2/health/ready", timeout=1).status_code == 200,
                30,
                f"rollwise-serve on port {port} to be ready",
                log,
            )
        return server

    def stop_all(self) -> None:
        for server in self.running:
            stop(server.proc)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The committed example artifacts (examples/models/, digests verified) plus their manifest."""
    out = tmp_path_factory.mktemp("models")
    manifest = make_example_models.committed_manifest()
    shutil.copytree(make_example_models.COMMITTED, out, dirs_exist_ok=True)
    manifest["dir"] = out
    return manifest


def model_args(models: dict[str, Any], key: str, *, name: str = "iris", version: str = "v1") -> list[str]:
    entry = models["models"][key]
    return [
        "--model-uri",
        str(models["dir"] / entry["file"]),
        "--sha256",
        entry["sha256"],
        "--format",
        entry["format"],
        "--name",
        name,
        "--version",
        version,
    ]


def schema_args(models: dict[str, Any]) -> list[str]:
    return [
        "--feature-schema",
        str(models["dir"] / models["feature_schema"]),
        "--reference",
        str(models["dir"] / models["reference"]),
    ]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    factory = ServerFactory(tmp_path_factory.mktemp("servers"))
    yield factory
    factory.stop_all()


@pytest.fixture
def fresh_servers(tmp_path: Path) -> Iterator[ServerFactory]:
    factory = ServerFactory(tmp_path)
    yield factory
    factory.stop_all()


def infer_body(rows: list[list[float]], datatype: str = "FP32", name: str = "input-0", **extra: Any) -> bytes:
    doc = {
        "inputs": [{"name": name, "shape": [len(rows), len(rows[0])], "datatype": datatype, "data": rows}],
        **extra,
    }
    return json.dumps(doc).encode()


SETOSA = [5.1, 3.5, 1.4, 0.2]
VERSICOLOR = [6.0, 2.7, 4.1, 1.0]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]


# ---- external services ---------------------------------------------------------------------------


@dataclass
class Redis:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def start_redis(tmp_path: Path, *args: str, tls: dict[str, str] | None = None, **client: Any) -> Redis:
    """A redis-server on a free loopback port, plus ``args`` (``--requirepass``, ``--user``...);
    with ``tls`` (cert, key, ca file paths) it listens for TLS only. ``client`` are the redis-py
    arguments that let the readiness PING in (a password, TLS settings)."""
    binary = require_binary("redis-server", "apt-get install redis-server")
    port = free_port()
    listen = ["--port", str(port)]
    if tls is not None:
        listen = ["--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no"]
        listen += [
            "--tls-cert-file",
            tls["cert"],
            "--tls-key-file",
            tls["key"],
            "--tls-ca-cert-file",
            tls["ca"],
        ]
    log = tmp_path / f"redis-{port}.log"
    proc = subprocess.Popen(
        [
            binary,
            *listen,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
            "--logfile",
            str(log),
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    import redis  # noqa: PLC0415

    ping = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, **client)
    wait_for(ping.ping, 10, "redis-server to answer PING", log)
    return Redis(proc, port)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Redis]:
    server = start_redis(tmp_path)
    yield server
    stop(server.proc)


@dataclass
class S3:
    proc: subprocess.Popen[bytes]
    endpoint: str


@pytest.fixture
def s3_server(tmp_path: Path) -> Iterator[S3]:
    binary = REPO / ".venv" / "bin" / "moto_server"
    if not binary.exists():
        pytest.fail("moto_server is not installed; run `.venv/bin/pip install -e '.[dev]'`", pytrace=False)
    port = free_port()
    proc = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)],
        stdout=(tmp_path / "moto.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: httpx.get(endpoint + "/moto-api/", timeout=1).status_code < 500,
        30,
        "moto_server",
        tmp_path / "moto.log",
    )
    yield S3(proc, endpoint)
    stop(proc)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env
