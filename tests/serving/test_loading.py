"""Where models come from and when they are refused: file, http, S3 (moto), digests, the CLI."""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.serving.conftest import S3, SERVE, SETOSA, ServerFactory, infer_body, model_args, schema_args


@pytest.fixture
def http_files(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A loopback HTTP server over a directory; yields (base URL, directory, request log)."""
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root, requests
    server.shutdown()
    server.server_close()


def test_digest_mismatch_refuses_to_load_and_readiness_says_why(
    fresh_servers: ServerFactory, models: dict[str, Any]
) -> None:
    args = model_args(models, "iris-v1")
    args[args.index("--sha256") + 1] = "0" * 64
    s = fresh_servers.start(*args, wait_ready=False)
    ready = s.get("/v2/health/ready")
    for _ in range(100):
        if ready.json()["models"][0]["state"] != "loading":
            break
        ready = s.get("/v2/health/ready")
    assert ready.status_code == 503
    body = ready.json()
    assert body["ready"] is False
    assert "sha256 mismatch" in body["reason"] and "refusing to load it" in body["reason"]
    assert body["models"][0]["state"] == "failed"
    r = s.post("/v2/models/iris/infer", content=infer_body([SETOSA]))
    assert r.status_code == 503 and "is not ready: sha256 mismatch" in r.json()["error"]
    assert s.get("/v2/health/live").status_code == 200
    assert s.sample("rollwise_model_loaded", role="primary") == 0
    assert "sha256 mismatch" in s.logs()


def test_model_over_http_is_downloaded_once_and_reused(
    fresh_servers: ServerFactory, models: dict[str, Any], http_files: tuple[str, Path, list[str]]
) -> None:
    base, root, requests = http_files
    shutil.copy(models["dir"] / "iris-v1.joblib", root / "model.joblib")
    sha = models["models"]["iris-v1"]["sha256"]
    args = ["--model-uri", f"{base}/model.joblib", "--sha256", sha, "--name", "iris", "--version", "v1"]
    first = fresh_servers.start(*args)
    assert first.post("/v2/models/iris/infer", content=infer_body([SETOSA])).json()["outputs"][0]["data"] == [
        "setosa"
    ]
    second = fresh_servers.start(*args)  # same cache dir: the verified copy is reused
    assert second.get("/v2/health/ready").status_code == 200
    assert requests == ["/model.joblib"]


def test_http_download_with_the_wrong_digest_is_not_kept(
    fresh_servers: ServerFactory,
    models: dict[str, Any],
    http_files: tuple[str, Path, list[str]],
    tmp_path: Path,
) -> None:
    base, root, _ = http_files
    (root / "model.joblib").write_bytes(b"not the model")
    sha = models["models"]["iris-v1"]["sha256"]
    s = fresh_servers.start(
        "--model-uri",
        f"{base}/model.joblib",
        "--sha256",
        sha,
        "--name",
        "iris",
        "--version",
        "v1",
        wait_ready=False,
    )
    _wait_state(s, "failed")
    assert "sha256 mismatch" in s.get("/v2/health/ready").json()["reason"]
    assert not list((tmp_path / "cache").rglob("model.joblib")), "a bad download must not stay in the cache"


def test_missing_http_artifact_is_reported(
    fresh_servers: ServerFactory, http_files: tuple[str, Path, list[str]]
) -> None:
    base, _, _ = http_files
    s = fresh_servers.start(
        "--model-uri",
        f"{base}/absent.onnx",
        "--format",
        "onnx",
        "--name",
        "iris",
        "--version",
        "v1",
        wait_ready=False,
    )
    _wait_state(s, "failed")
    assert "answered HTTP 404" in s.get("/v2/health/ready").json()["reason"]


def test_model_from_s3_compatible_store(
    fresh_servers: ServerFactory, models: dict[str, Any], s3_server: S3, aws_env: dict[str, str]
) -> None:
    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="models")
    client.upload_file(str(models["dir"] / "iris-mlp-int8.onnx"), "models", "iris/v1/model.onnx")
    sha = models["models"]["iris-mlp-int8"]["sha256"]
    s = fresh_servers.start(
        "--model-uri",
        "s3://models/iris/v1/model.onnx",
        "--sha256",
        sha,
        "--format",
        "onnx",
        "--name",
        "iris",
        "--version",
        "v1",
        "--s3-endpoint",
        s3_server.endpoint,
        env=aws_env,
    )
    r = s.post("/v2/models/iris/infer", content=infer_body([SETOSA]))
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == ["setosa"]
    assert s.get("/v2/health/ready").json()["models"][0]["sha256"] == sha


def test_missing_s3_key_is_reported(
    fresh_servers: ServerFactory, s3_server: S3, aws_env: dict[str, str]
) -> None:
    boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1").create_bucket(Bucket="empty")
    s = fresh_servers.start(
        "--model-uri",
        "s3://empty/nothing.onnx",
        "--format",
        "onnx",
        "--name",
        "iris",
        "--version",
        "v1",
        "--s3-endpoint",
        s3_server.endpoint,
        env=aws_env,
        wait_ready=False,
    )
    _wait_state(s, "failed")
    assert "cannot fetch s3://empty/nothing.onnx" in s.get("/v2/health/ready").json()["reason"]


def test_python_model_with_a_tampered_file_is_refused(
    fresh_servers: ServerFactory, models: dict[str, Any], tmp_path: Path
) -> None:
    """The digest is checked before the file is imported: tampered code never runs."""
    tampered = tmp_path / "rule.py"
    marker = tmp_path / "executed"
    tampered.write_text(
        (models["dir"] / "iris-rule.py").read_text() + f"\nopen({str(marker)!r}, 'w').close()\n"
    )
    s = fresh_servers.start(
        "--model-uri",
        str(tampered),
        "--sha256",
        models["models"]["iris-rule"]["sha256"],
        "--format",
        "python",
        "--name",
        "iris",
        "--version",
        "v1",
        wait_ready=False,
    )
    _wait_state(s, "failed")
    assert not marker.exists()
    assert hashlib.sha256(tampered.read_bytes()).hexdigest() in s.get("/v2/health/ready").json()["reason"]


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        pytest.param(
            ["--model-uri", "/m.joblib", "--name", "iris", "--version", "v1"],
            {},
            "--sha256 (env ROLLWISE_SHA256) is required for --format sklearn",
            id="pickle without digest",
        ),
        pytest.param(
            [
                "--model-uri",
                "/m.onnx",
                "--format",
                "onnx",
                "--name",
                "iris",
                "--version",
                "v1",
                "--track",
                "canary",
            ],
            {},
            "--track (env ROLLWISE_TRACK): 'canary' is not valid; use stable or candidate",
            id="canary is a strategy, not a track",
        ),
        pytest.param(
            [],
            {
                "ROLLWISE_MODEL_URI": "/m.onnx",
                "ROLLWISE_FORMAT": "onnx",
                "ROLLWISE_NAME": "iris",
                "ROLLWISE_VERSION": "v1",
                "ROLLWISE_DEADLINE_MS": "soon",
            },
            "--deadline-ms (env ROLLWISE_DEADLINE_MS): 'soon' is not valid; use an integer from 1 to 3600000",
            id="bad env var named with its flag",
        ),
        pytest.param(
            [
                "--model-uri",
                "/m.onnx",
                "--format",
                "onnx",
                "--name",
                "iris",
                "--version",
                "v1",
                "--feature-schema",
                '{"features": [{"name": "a", "min": 3, "max": 1}]}',
            ],
            {},
            "--feature-schema: features[0].min: must not exceed max; swap or fix the bounds",
            id="bad inline schema",
        ),
        pytest.param(
            [
                *["--model-uri", "/m.onnx", "--format", "onnx", "--name", "iris", "--version", "v1"],
                *["--redis-url", "rediss://redis:6380/0", "--redis-ca-file", "/nonexistent/ca.pem"],
            ],
            {},
            "--redis-ca-file (env ROLLWISE_REDIS_CA_FILE): '/nonexistent/ca.pem' is not a readable file; "
            "point it at the PEM bundle of the CA that signed the Redis server's certificate",
            id="a CA file that is not there",
        ),
    ],
)
def test_cli_rejects_bad_settings_with_the_flag_and_fix(
    args: list[str], env: dict[str, str], expected: str
) -> None:
    proc = subprocess.run(
        [str(SERVE), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert proc.returncode == 2
    assert f"rollwise-serve: error: {expected}" in proc.stderr


def test_env_vars_configure_the_server_like_flags(
    fresh_servers: ServerFactory, models: dict[str, Any]
) -> None:
    entry = models["models"]["iris-v1-onnx"]
    env = {
        "ROLLWISE_MODEL_URI": f"file://{models['dir'] / entry['file']}",
        "ROLLWISE_FORMAT": "onnx",
        "ROLLWISE_NAME": "flowers",
        "ROLLWISE_VERSION": "v7",
        "ROLLWISE_TRACK": "candidate",
    }
    s = fresh_servers.start(env=env)
    assert s.get("/v2/models/flowers/versions/v7").status_code == 200
    s.post("/v2/models/flowers/infer", content=infer_body([SETOSA]))
    assert (
        s.sample(
            "rollwise_requests_total", model="flowers", version="v7", track="candidate", outcome="success"
        )
        == 1
    )


def test_two_workers_share_one_metrics_view(fresh_servers: ServerFactory, models: dict[str, Any]) -> None:
    s = fresh_servers.start(*model_args(models, "iris-v1"), *schema_args(models), "--workers", "2")
    for _ in range(40):
        assert s.post("/v2/models/iris/infer", content=infer_body([SETOSA])).status_code == 200
    assert s.sample("rollwise_requests_total", outcome="success") == 40
    assert s.sample("rollwise_feature_value_count", feature="sepal_length") == 40
    assert s.sample("rollwise_feature_psi", feature="sepal_length") > 0


def _wait_state(server: Any, state: str) -> None:
    import time  # noqa: PLC0415

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.get("/v2/health/ready").json()["models"][0]["state"] == state:
            return
        time.sleep(0.05)
    raise AssertionError(f"model never reached state {state}: {server.get('/v2/health/ready').text}")
