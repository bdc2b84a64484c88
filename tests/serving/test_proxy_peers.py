"""``rollwise-proxy`` in front of the model servers people already run: MLServer and KServe's.

Both are the real servers from PyPI, as bench/serving.py runs them: MLServer (``mlserver start``
with ``mlserver_sklearn``) from its locked venv (bench/peers/mlserver.txt, made on first use),
KServe's ``ModelServer`` with a ``kserve.Model`` predictor from this repo's venv (kserve is a dev
dependency). Their clients' requests pass through unchanged (Triton's HTTP client, binary tensors
for KServe, which implements the extension), and the proxy's metrics read their answers.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton

from tests.serving.conftest import REPO, SETOSA, VERSICOLOR, VIRGINICA, Server, free_port, infer_body
from tests.serving.proxying import Processes, processes

pytestmark = pytest.mark.slow


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    yield from processes(tmp_path)


def bench() -> ModuleType:
    """bench/serving.py, for the peers' start-up code (the servers are started as it starts them)."""
    spec = importlib.util.spec_from_file_location("bench_serving", REPO / "bench" / "serving.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mlserver_bin() -> Path:
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "serving.py"), "--venv", "mlserver"],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        pytest.fail(f"the MLServer venv could not be made:\n{run.stderr[-3000:]}", pytrace=False)
    return Path(run.stdout.strip().splitlines()[-1]) / "bin" / "mlserver"


def iris_file(models: dict[str, Any]) -> Path:
    path: Path = models["dir"] / models["models"]["iris-v1"]["file"]
    return path


@pytest.fixture
def mlserver(procs: Processes, mlserver_bin: Path, models: dict[str, Any], tmp_path: Path) -> Server:
    repo = tmp_path / "mlserver-repo"
    (repo / "iris").mkdir(parents=True)
    model = iris_file(models)
    (repo / "iris" / model.name).write_bytes(model.read_bytes())
    settings = {"name": "iris", "implementation": "mlserver_sklearn.SKLearnModel"}
    (repo / "iris" / "model-settings.json").write_text(
        json.dumps({**settings, "parameters": {"uri": f"./{model.name}"}})
    )
    port = free_port()
    server = {"host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port()}
    (repo / "settings.json").write_text(json.dumps(server))
    return procs.start([str(mlserver_bin), "start", str(repo)], port, "/v2/models/iris/ready", cwd=repo)


@pytest.fixture
def kserve(procs: Processes, models: dict[str, Any], tmp_path: Path) -> Server:
    script = tmp_path / "kserve_model.py"
    script.write_text(bench().KSERVE_MODEL)
    port = free_port()
    argv = [sys.executable, str(script), "--model_name", "iris", "--model_path", str(iris_file(models))]
    argv += ["--http_port", str(port), "--grpc_port", str(free_port()), "--workers", "1"]
    return procs.start(argv, port, "/v2/models/iris/ready")


ROWS = np.array([SETOSA, VERSICOLOR, VIRGINICA, VIRGINICA], dtype=np.float32)


def triton_infer(server: Server, *, binary: bool) -> list[str]:
    tensor = triton.InferInput("input-0", list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS, binary_data=binary)
    c = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        result = c.infer("iris", [tensor], outputs=[triton.InferRequestedOutput(OUTPUT, binary_data=binary)])
    finally:
        c.close()
    return [v.decode() if isinstance(v, bytes) else str(v) for v in result.as_numpy(OUTPUT).ravel()]


OUTPUT = "label"


def test_mlserver_behind_the_proxy(procs: Processes, mlserver: Server, models: dict[str, Any]) -> None:
    schema = ["--feature-schema", str(models["dir"] / models["feature_schema"])]
    proxy = procs.proxy(mlserver.url, "oip-rest", *schema)
    body = infer_body(ROWS.tolist(), id="ml-1")
    direct = mlserver.post("/v2/models/iris/infer", content=body)
    through = proxy.post("/v2/models/iris/infer", content=body)
    assert through.status_code == direct.status_code == 200
    assert through.json()["outputs"] == direct.json()["outputs"]
    labels = through.json()["outputs"][0]["data"]
    assert labels == ["setosa", "versicolor", "virginica", "virginica"]
    assert proxy.sample("rollwise_requests_total", outcome="success") == 1
    assert proxy.sample("rollwise_prediction_value_count", **{"class": "virginica"}) == 2
    assert proxy.sample("rollwise_feature_value_count", feature="sepal_length") == 4
    # MLServer's refusal of a bad body is a client error here too
    bad = proxy.post("/v2/models/iris/infer", content=b'{"inputs": 3}')
    assert bad.status_code == mlserver.post("/v2/models/iris/infer", content=b'{"inputs": 3}').status_code
    assert 400 <= bad.status_code < 500
    assert proxy.sample("rollwise_requests_total", outcome="client_error") == 1


def test_kserve_behind_the_proxy_with_tritons_binary_client(
    procs: Processes, kserve: Server, models: dict[str, Any]
) -> None:
    schema = ["--feature-schema", str(models["dir"] / models["feature_schema"])]
    proxy = procs.proxy(kserve.url, "oip-rest", *schema)
    assert triton_infer(proxy, binary=True) == triton_infer(kserve, binary=True)
    # JSON: KServe reads a body without `content-type: application/json` as binary (and so refuses
    # tritonclient's JSON form, which sends none, with or without the proxy); the header passes on
    body, json_type = infer_body(ROWS.tolist(), id="ks-1"), {"content-type": "application/json"}
    through = proxy.post("/v2/models/iris/infer", content=body, headers=json_type)
    assert through.content == kserve.post("/v2/models/iris/infer", content=body, headers=json_type).content
    assert through.json()["outputs"][0]["data"] == ["setosa", "versicolor", "virginica", "virginica"]
    assert proxy.sample("rollwise_requests_total", outcome="success") == 2
    assert proxy.sample("rollwise_prediction_value_count", **{"class": "setosa"}) == 2
    assert proxy.sample("rollwise_feature_value_count", feature="petal_width") == 8
