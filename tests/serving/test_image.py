"""The serving image builds from the local base and answers an inference from a container.

Runs under the pod's constraints: UID 65532, read-only root filesystem, only /tmp writable, no
capabilities. The Docker daemon runs without a bridge (e2e/images.py), so the container shares
the host's network and listens on a loopback port of its own.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving.conftest import REPO, SETOSA, VIRGINICA, free_port, infer_body, metric_value

DOCKER = "/usr/bin/docker"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def image() -> str:
    if not Path(DOCKER).exists():
        pytest.fail(
            f"{DOCKER} is missing; run scripts/bootstrap.sh (apt-get install docker.io)", pytrace=False
        )
    proc = subprocess.run(
        ["bash", str(REPO / "serving-image" / "build-image.sh"), "--tag", "rollwise/serving:test"],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert proc.returncode == 0, f"build-image.sh failed\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture
def model_volume(models: dict[str, Any], tmp_path: Path) -> Path:
    """The artifacts in a directory UID 65532 can read (pytest's own temp dirs are root-only)."""
    volume = tmp_path / "volume"
    volume.mkdir()
    for entry in [models["models"]["iris-v1"]["file"], models["feature_schema"], models["reference"]]:
        shutil.copy(models["dir"] / entry, volume / entry)
        (volume / entry).chmod(0o644)
    volume.chmod(0o755)
    return volume


@pytest.fixture
def container(image: str, models: dict[str, Any], model_volume: Path) -> Iterator[tuple[str, str]]:
    name = f"rollwise-serving-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    entry = models["models"]["iris-v1"]
    argv = [
        DOCKER,
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--user",
        "65532:65532",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "-v",
        f"{model_volume}:/models:ro",
        "-e",
        f"ROLLWISE_MODEL_URI=file:///models/{entry['file']}",
        "-e",
        f"ROLLWISE_SHA256={entry['sha256']}",
        "-e",
        "ROLLWISE_NAME=iris",
        "-e",
        "ROLLWISE_VERSION=v1",
        "-e",
        "ROLLWISE_TRACK=candidate",
        "-e",
        "ROLLWISE_HOST=127.0.0.1",
        "-e",
        f"ROLLWISE_PORT={port}",
        "-e",
        f"ROLLWISE_FEATURE_SCHEMA=/models/{models['feature_schema']}",
        "-e",
        f"ROLLWISE_REFERENCE=/models/{models['reference']}",
        image,
    ]
    subprocess.run(argv, check=True, capture_output=True, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        yield name, url
    finally:
        subprocess.run([DOCKER, "rm", "-f", name], capture_output=True, check=False)


def test_image_answers_an_inference_as_non_root_on_a_read_only_root(container: tuple[str, str]) -> None:
    name, url = container
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            logs = subprocess.run([DOCKER, "logs", name], capture_output=True, text=True, check=False)
            pytest.fail(f"container never became ready\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
        time.sleep(0.3)
    r = httpx.post(url + "/v2/models/iris/infer", content=infer_body([SETOSA, VIRGINICA]), timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == ["setosa", "virginica"]
    bad = httpx.post(url + "/v2/models/iris/infer", content=infer_body([[50.0, 3.0, 1.0, 0.1]]), timeout=10)
    assert bad.status_code == 422
    text = httpx.get(url + "/metrics", timeout=10).text
    assert metric_value(text, "rollwise_requests_total", track="candidate", outcome="success") == 1
    assert metric_value(text, "rollwise_requests_total", track="candidate", outcome="client_error") == 1
    inspect = subprocess.run(
        [DOCKER, "exec", name, "python3", "-c", "import os; print(os.getuid()); open('/opt/x', 'w')"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert inspect.stdout.strip() == "65532"
    assert "Read-only file system" in inspect.stderr
