"""Safe on a shared cluster: every ModelDeployment, and every request, may come from a tenant
who means harm. Each case runs real `rollwise-serve` processes (and real peers: an HTTP recorder,
redis-server) and checks what the tenant could do before: opt out of mirroring and forwarding
with a forged hop header, hang a worker with a backtracking regex, fill memory through the mirror
queue or the disk through an endless artifact, read credentials from the model URI, or read
another tenant's cached answers.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from e2e.pki import Identity, issue, make_ca
from tests.serving.conftest import (
    S3,
    SETOSA,
    Redis,
    Server,
    ServerFactory,
    infer_body,
    model_args,
    start_redis,
    stop,
)

HOP = "x-rollwise-hop"
TOKEN = "hop-" + "0123456789abcdef" * 2


# ---- an HTTP peer that records what it is sent -----------------------------------------------


@dataclass
class Recorder:
    """A loopback HTTP server answering every POST with ``answer``, keeping each request's headers."""

    url: str
    requests: list[dict[str, str]] = field(default_factory=list)
    answer: bytes = b'{"model_version": "recorder"}'

    def hop_values(self) -> list[str]:
        return [r.get(HOP, "<none>") for r in self.requests]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    lock = threading.Lock()
    rec = Recorder(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            with lock:
                rec.requests.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(rec.answer)))
            self.end_headers()
            self.wfile.write(rec.answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_peer() -> Iterator[str]:
    """A loopback peer that accepts connections and never reads or answers: every copy sent to it
    is held until the sender's timeout."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stopping = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stopping.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def eventually(check: Any, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


# ---- 1. the hop header is signed ----------------------------------------------------------------

FORGED = ["mirror", "forward", "mirror:not-the-token", f"mirror:{TOKEN}x", f"forward:{TOKEN[:-1]}", ""]


@pytest.mark.parametrize("token", [TOKEN, None], ids=["with a hop token", "without a hop token"])
def test_a_forged_hop_header_does_not_opt_a_request_out_of_mirroring(
    fresh_servers: ServerFactory, models: dict[str, Any], recorder: Recorder, token: str | None
) -> None:
    args = ["--hop-token", token] if token else []
    primary = fresh_servers.start(*model_args(models, "iris-v1"), "--mirror-url", recorder.url, *args)
    for forged in FORGED:
        r = primary.post("/v2/models/iris/infer", content=infer_body([SETOSA]), headers={HOP: forged})
        assert r.status_code == 200 and r.json()["model_version"] == "v1"
    eventually(lambda: len(recorder.requests) == len(FORGED), "every request to be mirrored")
    # The copies carry the server's own hop value (signed when it has a token), never the client's.
    assert recorder.hop_values() == [f"mirror:{token}" if token else "mirror"] * len(FORGED)
    assert primary.sample("rollwise_mirror_total", result="sent") == len(FORGED)


def test_a_forged_hop_header_does_not_opt_a_request_out_of_forwarding(
    fresh_servers: ServerFactory, models: dict[str, Any], recorder: Recorder
) -> None:
    match = json.dumps([{"header": {"name": "x-variant", "value": "b"}}])
    front = fresh_servers.start(
        *model_args(models, "iris-v1"),
        "--forward-match",
        match,
        "--forward-url",
        recorder.url,
        "--hop-token",
        TOKEN,
    )
    for forged in FORGED:
        r = front.post(
            "/v2/models/iris/infer", content=infer_body([SETOSA]), headers={"x-variant": "b", HOP: forged}
        )
        assert r.status_code == 200 and r.json()["model_version"] == "recorder", forged
    assert recorder.hop_values() == [f"forward:{TOKEN}"] * len(FORGED)
    assert front.sample("rollwise_forward_total", result="sent") == len(FORGED)


def test_only_a_hop_signed_with_the_shared_token_stops_the_next_hop(
    fresh_servers: ServerFactory, models: dict[str, Any], recorder: Recorder
) -> None:
    """primary -> shadow -> recorder: the shadow, itself mirroring, sends on only what a client
    sent it, never the copies the primary signed with the token they share."""
    shadow = fresh_servers.start(
        *model_args(models, "iris-v2", version="v2"),
        "--track",
        "candidate",
        "--mirror-url",
        recorder.url,
        "--hop-token",
        TOKEN,
    )
    primary = fresh_servers.start(
        *model_args(models, "iris-v1"), "--mirror-url", shadow.url, "--hop-token", TOKEN
    )
    for _ in range(3):
        assert primary.post("/v2/models/iris/infer", content=infer_body([SETOSA])).status_code == 200
    eventually(
        lambda: shadow.sample("rollwise_requests_total", outcome="success") == 3, "the primary's 3 copies"
    )
    # A client holding the token may mark its own request as a hop; one guessing may not.
    signed = shadow.post(
        "/v2/models/iris/infer", content=infer_body([SETOSA]), headers={HOP: f"mirror:{TOKEN}"}
    )
    forged = shadow.post("/v2/models/iris/infer", content=infer_body([SETOSA]), headers={HOP: "mirror"})
    assert signed.status_code == forged.status_code == 200
    eventually(lambda: len(recorder.requests) >= 1, "the forged request's copy")
    time.sleep(0.5)  # any other copy would have arrived by now: the sender queue was empty
    assert len(recorder.requests) == 1
    assert shadow.sample("rollwise_mirror_total", result="sent") == 1


# ---- 2. user regexes run on RE2 -----------------------------------------------------------------


def test_a_catastrophic_regex_is_answered_at_once(
    fresh_servers: ServerFactory, models: dict[str, Any], recorder: Recorder
) -> None:
    """`(a+)+$` on 30 000 a's and a b takes a backtracking engine longer than the age of the universe
    (and holds the event loop meanwhile); RE2 answers in linear time."""
    match = json.dumps([{"header": {"name": "x-group", "regex": "(a+)+$"}}])
    front = fresh_servers.start(
        *model_args(models, "iris-v1"),
        "--forward-match",
        match,
        "--forward-url",
        recorder.url,
        "--max-header-bytes",
        "65536",
    )
    evil = front.post(
        "/v2/models/iris/infer", content=infer_body([SETOSA]), headers={"x-group": "a" * 30_000 + "b"}
    )
    assert evil.status_code == 200 and evil.json()["model_version"] == "v1"
    # Still a match of the whole value: all a's go to the peer.
    ok = front.post("/v2/models/iris/infer", content=infer_body([SETOSA]), headers={"x-group": "a" * 30_000})
    assert ok.status_code == 200 and ok.json()["model_version"] == "recorder"
    assert front.get("/v2/health/live").status_code == 200


# ---- 3. the mirror queue is bounded in bytes ------------------------------------------------------


def test_large_bodies_to_a_stalled_shadow_are_dropped_past_the_byte_budget(
    fresh_servers: ServerFactory, models: dict[str, Any], silent_peer: str
) -> None:
    """512 queued copies of 1 MiB bodies were 512 MiB held for a shadow that does not answer; the
    budget counts the bytes of copies queued or being sent."""
    primary = fresh_servers.start(
        *model_args(models, "iris-v1"), "--mirror-url", silent_peer, "--mirror-queue-bytes", str(1 << 20)
    )
    big = infer_body([SETOSA]) + b" " * 300_000  # valid JSON: whitespace after the document
    for _ in range(20):
        assert primary.post("/v2/models/iris/infer", content=big).status_code == 200
    # At most 3 copies of ~300 kB fit in 1 MiB; the rest were dropped, and counted.
    dropped = primary.sample("rollwise_mirror_total", result="dropped")
    assert dropped >= 15, dropped
    # The held copies time out (2 s) and give their bytes back: mirroring resumes.
    eventually(
        lambda: primary.sample("rollwise_mirror_total", result="failed") == 20 - dropped, "the copies to fail"
    )
    assert primary.post("/v2/models/iris/infer", content=big).status_code == 200
    assert primary.sample("rollwise_mirror_total", result="dropped") == dropped


# ---- 4. model downloads are capped --------------------------------------------------------------

CAP = 1 << 20


@dataclass
class Endless:
    url: str
    written: list[int] = field(default_factory=lambda: [0])
    """Bytes written so far (one cell, shared with the server thread)."""


@pytest.fixture
def endless_artifact() -> Iterator[Endless]:
    """An HTTP server whose artifact never ends: zeros, 64 kB at a time, with no Content-Length,
    until the client hangs up."""
    endless = Endless(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/octet-stream")
            self.end_headers()
            chunk = b"\0" * 65536
            try:
                while True:
                    self.wfile.write(chunk)
                    endless.written[0] += len(chunk)
            except OSError:
                return  # the client hung up

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    endless.url = f"http://127.0.0.1:{server.server_address[1]}/model.onnx"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield endless
    server.shutdown()
    server.server_close()


def onnx_args(uri: str) -> list[str]:
    return ["--model-uri", uri, "--format", "onnx", "--name", "iris", "--version", "v1"]


def failed_reason(server: Server) -> str:
    def failed() -> bool:
        return bool(server.get("/v2/health/ready").json()["models"][0]["state"] == "failed")

    eventually(failed, "the model load to fail", timeout=30)
    ready = server.get("/v2/health/ready")
    assert ready.status_code == 503
    assert server.get("/v2/health/live").status_code == 200
    return str(ready.json()["reason"])


def test_an_endless_artifact_is_cut_at_the_cap_and_removed(
    fresh_servers: ServerFactory, endless_artifact: Endless, tmp_path: Path
) -> None:
    s = fresh_servers.start(*onnx_args(endless_artifact.url), "--max-model-bytes", str(CAP), wait_ready=False)
    reason = failed_reason(s)
    assert reason == (
        f"model artifact {endless_artifact.url} is over the {CAP}-byte limit (--max-model-bytes, env "
        "ROLLWISE_MAX_MODEL_BYTES): the download was stopped and removed; raise the limit if the "
        "artifact really is this large"
    )
    assert "--max-model-bytes" in s.logs()
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == [], "a partial download stayed"
    written = endless_artifact.written[0]
    time.sleep(0.5)
    assert endless_artifact.written[0] == written < 32 * CAP, "the download did not stop"


def test_an_artifact_over_the_cap_is_refused_from_a_file_and_from_s3(
    fresh_servers: ServerFactory, s3_server: S3, aws_env: dict[str, str], tmp_path: Path
) -> None:
    big = tmp_path / "big.onnx"
    with big.open("wb") as f:
        f.truncate(2 * CAP)  # sparse: costs no disk
    local = fresh_servers.start(*onnx_args(str(big)), "--max-model-bytes", str(CAP), wait_ready=False)
    assert failed_reason(local).startswith(
        f"model artifact {big} is over the {CAP}-byte limit (--max-model-bytes"
    )

    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="models")
    client.upload_file(str(big), "models", "big.onnx")
    remote = fresh_servers.start(
        *onnx_args("s3://models/big.onnx"),
        "--s3-endpoint",
        s3_server.endpoint,
        "--max-model-bytes",
        str(CAP),
        env=aws_env,
        wait_ready=False,
    )
    assert failed_reason(remote).startswith(
        f"model artifact s3://models/big.onnx is over the {CAP}-byte limit (--max-model-bytes"
    )
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


# ---- 5. credentials in model URIs are never shown ---------------------------------------------

SECRETS = [
    "alice",
    "s3cr3t-pw",
    "AKIAEXAMPLE",
    "X-Amz",
    "deadbeefcafe0123456789",
    "abcdefgh12345678",
    "tok-0123",
]
QUERY = (
    "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20260101%2Fus-east-1%2Fs3"
    "&X-Amz-Signature=deadbeefcafe0123456789&sig=abcdefgh12345678&token=tok-0123456789"
)


@pytest.fixture
def model_files(tmp_path: Path, models: dict[str, Any]) -> Iterator[str]:
    """A loopback HTTP server over the example models that ignores credentials and query strings."""
    root = tmp_path / "www" / "models"
    root.mkdir(parents=True)
    shutil.copy(models["dir"] / models["models"]["iris-v1-onnx"]["file"], root / "iris.onnx")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path / "www"))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def assert_no_secret(text: str, where: str) -> None:
    leaked = [s for s in SECRETS if s in text]
    assert not leaked, f"{where} shows {leaked}: {text[:2000]}"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_credentials_in_the_model_uri_are_shown_nowhere(
    fresh_servers: ServerFactory, model_files: str, workers: str
) -> None:
    uri = f"http://alice:s3cr3t-pw@{model_files}/models/iris.onnx{QUERY}"
    s = fresh_servers.start(*onnx_args(uri), "--log-level", "debug", "--workers", workers)
    for path in (
        "/v2/health/ready",
        "/v2/models/iris/ready",
        "/v2/models/iris",
        "/v2/models/iris/versions/v1",
    ):
        r = s.get(path)
        assert r.status_code == 200
        assert_no_secret(r.text, path)
    assert (
        s.get("/v2/health/ready").json()["models"][0]["uri"] == f"http://***@{model_files}/models/iris.onnx"
    )
    assert s.post("/v2/models/iris/infer", content=infer_body([SETOSA])).status_code == 200
    logs = s.logs()
    assert f"loaded from http://***@{model_files}/models/iris.onnx" in logs  # the load is logged ...
    assert "HTTP Request: GET" in logs  # ... and so is the download, at debug level
    assert_no_secret(logs, "the log")


def test_credentials_stay_hidden_when_the_download_fails(
    fresh_servers: ServerFactory, model_files: str
) -> None:
    uri = f"https://alice:s3cr3t-pw@{model_files}/models/absent.onnx{QUERY}"  # TLS to a plain server
    fallback = f"http://alice:s3cr3t-pw@{model_files}/models/absent.onnx{QUERY}"  # 404
    s = fresh_servers.start(*onnx_args(uri), "--fallback-uri", fallback, wait_ready=False)
    reason = failed_reason(s)
    assert reason.startswith(f"cannot fetch https://***@{model_files}/models/absent.onnx: "), reason
    eventually(
        lambda: s.get("/v2/health/ready").json()["models"][1]["state"] == "failed", "the fallback to fail"
    )
    body = s.get("/v2/health/ready").text
    assert f"GET http://***@{model_files}/models/absent.onnx answered HTTP 404" in body
    assert_no_secret(body, "readiness")
    assert_no_secret(s.logs(), "the log")


# ---- 6. the Redis cache is per tenant and per artifact ------------------------------------------


def redis_keys(redis: Redis, **client: Any) -> list[str]:
    """The prediction cache's keys (answers waiting for labels share the Redis: left out)."""
    import redis as redis_py  # noqa: PLC0415

    with redis_py.Redis(host="127.0.0.1", port=redis.port, socket_timeout=2, **client) as c:
        return sorted(key for k in c.keys("*") if ":feedback:" not in (key := k.decode()))


def prefixes(keys: list[str]) -> list[str]:
    """``rollwise:<ns>:<name>:<version>:<digest>:<hash>`` -> everything up to the hash."""
    return sorted(k.rpartition(":")[0] + ":" for k in keys)


def redis_results(server: Server) -> dict[str, float]:
    return {
        r: server.sample("rollwise_cache_total", tier="redis", result=r) for r in ("hit", "miss", "error")
    }


def ask(server: Server) -> None:
    r = server.post("/v2/models/iris/infer", content=infer_body([SETOSA], id="same-question"))
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == ["setosa"], r.text


def test_cache_keys_carry_the_namespace_and_the_loaded_artifacts_digest(
    fresh_servers: ServerFactory, models: dict[str, Any], redis_server: Redis
) -> None:
    """Unpinned artifacts (ONNX needs no --sha256): before, both tenants' iris/v1 and a new artifact
    under the same version all shared ``rollwise:iris:v1::``."""
    entries = models["models"]
    float_onnx, int8_onnx = (
        str(models["dir"] / entries[k]["file"]) for k in ("iris-v1-onnx", "iris-mlp-int8")
    )

    def start(path: str, namespace: str) -> Server:
        return fresh_servers.start(
            *onnx_args(path), "--redis-url", redis_server.url, env={"POD_NAMESPACE": namespace}
        )

    first = start(float_onnx, "tenant-a")
    ask(first)
    eventually(lambda: len(redis_keys(redis_server)) == 1, "the first answer to reach Redis")
    replica = start(float_onnx, "tenant-a")
    ask(replica)
    assert redis_results(replica) == {"hit": 1, "miss": 0, "error": 0}  # replicas still share answers
    for other in (start(float_onnx, "tenant-b"), start(int8_onnx, "tenant-a")):
        ask(other)
        assert redis_results(other) == {"hit": 0, "miss": 1, "error": 0}
    eventually(lambda: len(redis_keys(redis_server)) == 3, "every answer to reach Redis")
    float_sha, int8_sha = (entries[k]["sha256"] for k in ("iris-v1-onnx", "iris-mlp-int8"))
    assert prefixes(redis_keys(redis_server)) == sorted(
        [
            f"rollwise:tenant-a:iris:v1:{float_sha}:",
            f"rollwise:tenant-a:iris:v1:{int8_sha}:",
            f"rollwise:tenant-b:iris:v1:{float_sha}:",
        ]
    )


@pytest.fixture
def redis_tls(tmp_path: Path) -> dict[str, str]:
    """A CA and a server certificate for 127.0.0.1."""
    pki = tmp_path / "pki"
    pki.mkdir()
    ca_key, ca_cert = make_ca(pki, "ca")
    issue(pki, ca_key, ca_cert, Identity("redis", "redis", server=True, client=False, ips=("127.0.0.1",)))
    return {"cert": str(pki / "redis.crt"), "key": str(pki / "redis.key"), "ca": str(pki / "ca.crt")}


PASSWORD = "redis-pw-0123456789"


def test_the_cache_speaks_tls_with_a_password(
    fresh_servers: ServerFactory, models: dict[str, Any], tmp_path: Path, redis_tls: dict[str, str]
) -> None:
    redis = start_redis(
        tmp_path,
        "--requirepass",
        PASSWORD,
        tls=redis_tls,
        password=PASSWORD,
        ssl=True,
        ssl_ca_certs=redis_tls["ca"],
    )
    try:
        url = f"rediss://:{PASSWORD}@127.0.0.1:{redis.port}/0"
        iris = model_args(models, "iris-v1")
        first = fresh_servers.start(*iris, "--redis-url", url, "--redis-ca-file", redis_tls["ca"])
        ask(first)
        client = {"password": PASSWORD, "ssl": True, "ssl_ca_certs": redis_tls["ca"]}
        eventually(lambda: len(redis_keys(redis, **client)) == 1, "the answer to reach Redis over TLS")
        second = fresh_servers.start(*iris, "--redis-url", url, "--redis-ca-file", redis_tls["ca"])
        ask(second)
        assert redis_results(second) == {"hit": 1, "miss": 0, "error": 0}
        # The certificate is verified: without our CA the cache is off (counted), the answer is not.
        untrusting = fresh_servers.start(*iris, "--redis-url", url)
        ask(untrusting)
        assert redis_results(untrusting) == {"hit": 0, "miss": 0, "error": 1}
        wrong = fresh_servers.start(
            *iris,
            "--redis-url",
            f"rediss://:not-the-password@127.0.0.1:{redis.port}/0",
            "--redis-ca-file",
            redis_tls["ca"],
        )
        ask(wrong)
        assert redis_results(wrong) == {"hit": 0, "miss": 0, "error": 1}
        for server in (first, second, untrusting):
            assert PASSWORD not in server.logs()
        assert "redis cache unavailable" in untrusting.logs()
    finally:
        stop(redis.proc)


def test_a_redis_acl_can_confine_a_tenant_to_its_namespace(
    fresh_servers: ServerFactory, models: dict[str, Any], tmp_path: Path
) -> None:
    """The namespace comes first in every key, so an ACL user per tenant (``redis://user:pw@``)
    keeps each tenant's pods to their own answers."""
    acl = [
        "--user",
        "default",
        "off",
        "--user",
        "tenant-a",
        "on",
        f">{PASSWORD}",
        "~rollwise:tenant-a:*",
        "+@all",
    ]
    redis = start_redis(tmp_path, *acl, username="tenant-a", password=PASSWORD)
    try:
        url = f"redis://tenant-a:{PASSWORD}@127.0.0.1:{redis.port}/0"
        iris = model_args(models, "iris-v1")
        own = [
            fresh_servers.start(*iris, "--redis-url", url, env={"POD_NAMESPACE": "tenant-a"})
            for _ in range(2)
        ]
        ask(own[0])
        eventually(
            lambda: len(redis_keys(redis, username="tenant-a", password=PASSWORD)) == 1,
            "the answer to reach Redis",
        )
        ask(own[1])
        assert redis_results(own[1]) == {"hit": 1, "miss": 0, "error": 0}
        # tenant-a's credentials in a tenant-b pod reach no key: refused (counted), answered anyway.
        elsewhere = fresh_servers.start(*iris, "--redis-url", url, env={"POD_NAMESPACE": "tenant-b"})
        ask(elsewhere)
        assert redis_results(elsewhere) == {"hit": 0, "miss": 0, "error": 1}
        assert PASSWORD not in elsewhere.logs()
    finally:
        stop(redis.proc)
