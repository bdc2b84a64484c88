"""The serving image builds from the local base and answers an inference from a container.

Runs under the pod's constraints: UID 65532, read-only root filesystem, only /tmp writable, no
capabilities. The Docker daemon runs without a bridge (e2e/images.py), so the container shares
the host's network and listens on a loopback port of its own.

Each variant (`build-image.sh --variant`, #17, #20) answers under the same constraints with no
network at all (`--network none`): the xgboost and lightgbm variants serve a booster trained here
and answer one inference over HTTP from inside the container (docker exec, urllib) as the
library itself does on the host; the batch variant runs `rollwise-batch` on a small Parquet file
and writes the scores and rejects the host's own model and schema give. Each carries its extra's
libraries and none of the others'.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xgboost as xgb
from sklearn.datasets import load_iris

from tests.serving.conftest import REPO, SETOSA, VERSICOLOR, VIRGINICA, free_port, infer_body, metric_value

DOCKER = "/usr/bin/docker"
pytestmark = pytest.mark.slow


POD_CONSTRAINTS = [
    "--read-only",
    "--tmpfs",
    "/tmp",
    "--user",
    "65532:65532",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
]
"""A pod's constraints: non-root, read-only root with /tmp writable, no capabilities."""
LOCKED_DOWN = ["--network", "none", *POD_CONSTRAINTS]
"""A pod's constraints, and no network: whatever a variant needs is in the image."""
OPTIONAL_MODULES = {"batch": ["pyarrow", "pandas"], "xgboost": ["xgboost"], "lightgbm": ["lightgbm"]}
"""What each variant adds; the default image has none of them, a variant only its own."""


def build(*args: str) -> str:
    """`serving-image/build-image.sh args...`; the image reference it prints last."""
    if not Path(DOCKER).exists():
        pytest.fail(
            f"{DOCKER} is missing; run scripts/bootstrap.sh (apt-get install docker.io)", pytrace=False
        )
    proc = subprocess.run(
        ["bash", str(REPO / "serving-image" / "build-image.sh"), *args],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert proc.returncode == 0, f"build-image.sh failed\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def image() -> str:
    return build("--tag", "rollwise/serving:test")


@pytest.fixture(scope="module")
def variant_image(request: pytest.FixtureRequest) -> str:
    """The variant named by indirect parametrization, built once per module."""
    name: str = request.param
    return build("--variant", name, "--tag", f"rollwise/serving:test-{name}")


def readable_dir(path: Path) -> Path:
    """A directory UID 65532 can read (pytest's own temp dirs are root-only)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return path


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
        *POD_CONSTRAINTS,
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


# ---- variants -----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant_image", sorted(OPTIONAL_MODULES), indirect=True)
def test_a_variant_carries_its_own_libraries_and_no_other_variants(variant_image: str) -> None:
    variant = variant_image.rsplit("-", 1)[1]
    modules = sorted({m for ms in OPTIONAL_MODULES.values() for m in ms})
    probe = (
        "import importlib.util, json, sys; "
        "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}))"
    )
    proc = subprocess.run(
        [
            DOCKER,
            "run",
            "--rm",
            *LOCKED_DOWN,
            "--entrypoint",
            "python3",
            variant_image,
            "-c",
            probe,
            *modules,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {m: m in OPTIONAL_MODULES[variant] for m in modules}
    label = subprocess.run(
        [DOCKER, "image", "inspect", "-f", '{{index .Config.Labels "dev.rollwise.variant"}}', variant_image],
        capture_output=True,
        text=True,
        check=True,
    )
    assert label.stdout.strip() == variant


IRIS_X, IRIS_Y = load_iris(return_X_y=True)
ROWS = IRIS_X[::10]
"""15 Iris rows, all three classes."""


def train_booster(variant: str, volume: Path) -> tuple[Path, dict[str, np.ndarray[Any, Any]]]:
    """A small Iris booster of `variant`'s library in `volume`, and what the library answers for ROWS."""
    if variant == "xgboost":
        booster = xgb.train(
            {"objective": "multi:softprob", "num_class": 3, "max_depth": 2, "nthread": 1},
            xgb.DMatrix(IRIS_X, IRIS_Y),
            6,
        )
        file = volume / "iris.json"
        booster.save_model(file)
        p = booster.predict(xgb.DMatrix(ROWS))
    else:
        model = lgb.train(
            {"objective": "multiclass", "num_class": 3, "num_threads": 1, "verbose": -1},
            lgb.Dataset(IRIS_X, IRIS_Y),
            6,
        )
        file = volume / "iris.txt"
        model.save_model(file)
        p = model.predict(ROWS)
    file.chmod(0o644)
    return file, {"label": p.argmax(axis=1), "probabilities": p}


# Runs inside the container (docker exec): the image's own python3, loopback only.
HTTP_PROBE = """
import json, os, sys, time, urllib.error, urllib.request
url = "http://127.0.0.1:8080"
deadline = time.monotonic() + 90
while True:
    try:
        if urllib.request.urlopen(url + "/v2/health/ready", timeout=1).status == 200:
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("the server never became ready")
    time.sleep(0.3)
body = sys.stdin.buffer.read()
headers = {"content-type": "application/json"}
request = urllib.request.Request(url + "/v2/models/m/infer", data=body, headers=headers)
with urllib.request.urlopen(request, timeout=30) as r:
    answer = {"status": r.status, "body": json.load(r)}
try:
    open("/opt/x", "w")
    answer["root"] = "writable"
except OSError as err:
    answer["root"] = err.strerror
answer["uid"] = os.getuid()
print(json.dumps(answer))
"""


@pytest.mark.parametrize("variant_image", ["xgboost", "lightgbm"], indirect=True)
def test_a_format_variant_serves_its_format_with_no_network_as_non_root_on_a_read_only_root(
    variant_image: str, tmp_path: Path
) -> None:
    variant = variant_image.rsplit("-", 1)[1]
    volume = readable_dir(tmp_path / "volume")
    file, expected = train_booster(variant, volume)
    name = f"rollwise-variant-test-{uuid.uuid4().hex[:8]}"
    argv = [DOCKER, "run", "-d", "--name", name, *LOCKED_DOWN, "-v", f"{volume}:/models:ro", variant_image]
    serve = [
        "--model-uri",
        f"file:///models/{file.name}",
        "--format",
        variant,
        "--name",
        "m",
        "--version",
        "v1",
    ]
    subprocess.run([*argv, *serve], check=True, capture_output=True, text=True)
    try:
        proc = subprocess.run(
            [DOCKER, "exec", "-i", name, "python3", "-c", HTTP_PROBE],
            input=infer_body(ROWS.tolist(), "FP64"),
            capture_output=True,
            timeout=180,
            check=False,
        )
        if proc.returncode != 0:
            logs = subprocess.run([DOCKER, "logs", name], capture_output=True, text=True, check=False)
            pytest.fail(f"{proc.stderr.decode()[-2000:]}\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
    finally:
        subprocess.run([DOCKER, "rm", "-f", name], capture_output=True, check=False)
    answer = json.loads(proc.stdout)
    assert (answer["uid"], answer["root"], answer["status"]) == (65532, "Read-only file system", 200)
    outputs = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in answer["body"]["outputs"]}
    assert set(outputs) == set(expected)
    assert outputs["label"].tolist() == expected["label"].tolist()
    np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant_image", ["batch"], indirect=True)
def test_the_batch_variant_scores_parquet_with_no_network_as_non_root_on_a_read_only_root(
    variant_image: str, models: dict[str, Any], tmp_path: Path
) -> None:
    entry = models["models"]["iris-v1"]
    data = readable_dir(tmp_path / "data")
    for file in [entry["file"], models["feature_schema"]]:
        shutil.copy(models["dir"] / file, data / file)
        (data / file).chmod(0o644)
    rows = [SETOSA, VERSICOLOR, VIRGINICA, [5.0, 99.0, 1.4, 0.2], VERSICOLOR]
    features = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    table = pa.table(
        {"id": [10, 11, 12, 13, 14], **{f: [r[i] for r in rows] for i, f in enumerate(features)}}
    )
    pq.write_table(table, data / "rows.parquet")
    (data / "rows.parquet").chmod(0o644)
    out, report = tmp_path / "out", tmp_path / "report"
    for writable in (out, report):
        writable.mkdir()
        writable.chmod(0o777)  # the container's UID 65532 writes here, as to the output claim
    argv = [
        DOCKER, "run", "--rm", *LOCKED_DOWN,
        "-v", f"{data}:/data:ro", "-v", f"{out}:/out", "-v", f"{report}:/report",
        "--entrypoint", "rollwise-batch", variant_image,
        "--model-uri", f"file:///data/{entry['file']}", "--sha256", entry["sha256"],
        "--format", entry["format"],
        "--feature-schema", f"/data/{models['feature_schema']}",
        "--input", "/data/rows.parquet", "--output", "/out", "--keep", "id",
        "--termination-log", "/report/summary.json",
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    summary = json.loads((report / "summary.json").read_text())
    assert (summary["status"], summary["rowsIn"], summary["rowsOut"], summary["rowsRejected"]) == (
        "succeeded", 5, 4, 1
    )  # fmt: skip
    assert summary["modelSha256"] == entry["sha256"]
    (part,) = sorted(out.glob("part-*.parquet"))
    scored = pq.read_table(part)
    host_model = joblib.load(models["dir"] / entry["file"])
    good = [0, 1, 2, 4]
    assert scored["id"].to_pylist() == [10 + i for i in good]
    assert scored["label"].to_pylist() == host_model.predict(np.asarray([rows[i] for i in good])).tolist()
    (rejects,) = sorted(out.glob("rejects-*.jsonl"))
    (reject,) = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert (reject["row"], reject["message"]) == (3, "rows[3][1] (sepal_width): 99 is outside [1.5, 5.5]")
