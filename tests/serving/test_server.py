"""A real ``rollwise-serve`` process per model format, driven over HTTP and by Triton's OIP client."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from prometheus_client.utils import floatToGoString
from sklearn.datasets import load_iris

from tests.serving.conftest import (
    SETOSA,
    VERSICOLOR,
    VIRGINICA,
    Server,
    ServerFactory,
    infer_body,
    metric_value,
    model_args,
    schema_args,
)


@pytest.fixture(scope="module")
def iris(servers: ServerFactory, models: dict[str, Any]) -> Server:
    return servers.start(*model_args(models, "iris-v1"), *schema_args(models), "--max-body-bytes", "4096")


# ---- health and metadata -------------------------------------------------------------------------


def test_live_ready_and_server_metadata(iris: Server) -> None:
    assert iris.get("/v2/health/live").json() == {"live": True}
    ready = iris.get("/v2/health/ready")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    assert ready.json()["models"][0]["state"] == "ready"
    assert iris.get("/v2").json()["name"] == "rollwise"
    assert iris.get("/v2/models/iris/ready").json()["ready"] is True
    assert iris.get("/v2/models/iris/versions/v1/ready").status_code == 200


def test_model_metadata_describes_inputs_and_outputs(iris: Server, models: dict[str, Any]) -> None:
    for path in ("/v2/models/iris", "/v2/models/iris/versions/v1"):
        meta = iris.get(path).json()
        assert meta["name"] == "iris" and meta["versions"] == ["v1"] and meta["platform"] == "sklearn"
        assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
        assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]


# ---- inference -----------------------------------------------------------------------------------


def test_infer_answers_each_row_with_label_and_probabilities(iris: Server) -> None:
    r = iris.post("/v2/models/iris/infer", content=infer_body([SETOSA, VERSICOLOR, VIRGINICA], id="req-1"))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["id"] == "req-1" and doc["model_name"] == "iris" and doc["model_version"] == "v1"
    out = {o["name"]: o for o in doc["outputs"]}
    assert out["label"] == {
        "name": "label",
        "datatype": "BYTES",
        "shape": [3],
        "data": ["setosa", "versicolor", "virginica"],
    }
    probabilities = np.array(out["probabilities"]["data"]).reshape(out["probabilities"]["shape"])
    assert probabilities.shape == (3, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT32", "INT64"])
def test_every_numeric_datatype_is_accepted(iris: Server, datatype: str) -> None:
    rows = [[5, 3, 1, 0]] if datatype.startswith("INT") else [SETOSA]
    r = iris.post("/v2/models/iris/infer", content=infer_body(rows, datatype))
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == ["setosa"]


def test_outputs_selection_returns_only_what_was_asked(iris: Server) -> None:
    r = iris.post("/v2/models/iris/infer", content=infer_body([SETOSA], outputs=[{"name": "probabilities"}]))
    assert [o["name"] for o in r.json()["outputs"]] == ["probabilities"]
    bad = iris.post("/v2/models/iris/infer", content=infer_body([SETOSA], outputs=[{"name": "score"}]))
    assert bad.status_code == 400
    assert "unknown output(s) ['score']; this model has ['label', 'probabilities']" in bad.json()["error"]


def test_named_feature_route_applies_the_schema(iris: Server) -> None:
    ok = iris.post(
        "/v2/models/iris/predict",
        json={
            "instances": [
                dict(
                    zip(
                        ["sepal_length", "sepal_width", "petal_length", "petal_width"], VIRGINICA, strict=True
                    )
                )
            ]
        },
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["predictions"] == ["virginica"]
    bad = iris.post(
        "/v2/models/iris/predict",
        json={
            "instances": [{"sepal_length": 50, "sepal_width": "wide", "petal_length": 1.0, "colour": "red"}]
        },
    )
    assert bad.status_code == 422
    details = {(d["loc"], d["problem"]) for d in bad.json()["details"]}
    assert details == {
        ("instances[0].sepal_length", "out_of_range"),
        ("instances[0].sepal_width", "rejected"),
        ("instances[0].petal_width", "missing"),
        ("instances[0].colour", "rejected"),
    }


# ---- every bad input gets a clear 4xx, and the server keeps serving -------------------------------

BAD_INPUTS = [
    pytest.param("/v2/models/iris/infer", b"{not json", 400, "not valid JSON", id="malformed JSON"),
    pytest.param(
        "/v2/models/iris/infer",
        infer_body([[1.0, 2.0, 3.0]]),
        400,
        "the model expects ['N', 4]",
        id="wrong shape",
    ),
    pytest.param(
        "/v2/models/iris/infer",
        infer_body([["a", "b", "c", "d"]], "BYTES"),
        400,
        "is BYTES; this model takes numbers",
        id="wrong datatype",
    ),
    pytest.param(
        "/v2/models/iris/infer",
        b'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[1e999,1,1,1]}]}',
        400,
        "not valid JSON",
        id="infinity literal",
    ),
    pytest.param(
        "/v2/models/iris/infer",
        b'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[NaN,1,1,1]}]}',
        400,
        "not valid JSON",
        id="NaN literal",
    ),
    pytest.param(
        "/v2/models/iris/infer",
        b'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[1e300,1,1,1]}]}',
        400,
        "non-finite",
        id="FP32 overflow",
    ),
    pytest.param(
        "/v2/models/iris/infer",
        infer_body([[15.0, 3.0, 1.0, 0.2]]),
        422,
        "sepal_length",
        id="out of declared range",
    ),
    pytest.param(
        "/v2/models/iris/infer",
        json.dumps(
            {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [1.0] * 2000}]}
        ).encode(),
        413,
        "over the 4096-byte limit",
        id="body over the limit",
    ),
    pytest.param("/v2/models/other/infer", infer_body([SETOSA]), 404, "no model 'other'", id="unknown model"),
    pytest.param(
        "/v2/models/iris/versions/v9/infer",
        infer_body([SETOSA]),
        404,
        "no version 'v9'",
        id="unknown version",
    ),
    pytest.param(
        "/v2/models/iris/predict", b'{"rows": []}', 400, '{"instances"', id="features route without instances"
    ),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), BAD_INPUTS)
def test_bad_input_gets_a_clear_4xx(iris: Server, path: str, body: bytes, status: int, message: str) -> None:
    r = iris.post(path, content=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"] + json.dumps(r.json().get("details", ""))
    assert iris.post("/v2/models/iris/infer", content=infer_body([SETOSA])).status_code == 200


def test_chunked_body_over_the_limit_is_refused_without_content_length(iris: Server) -> None:
    def chunks() -> Any:
        for _ in range(10):
            yield b" " * 1000

    r = iris.post("/v2/models/iris/infer", content=chunks())
    assert r.status_code == 413


def test_wrong_method_and_unknown_route(iris: Server) -> None:
    assert iris.get("/v2/models/iris/infer").status_code == 405
    assert iris.get("/v3/whatever").status_code == 404


def test_concurrent_good_and_bad_requests_never_mix(iris: Server) -> None:
    """Good rows answered right while bad requests fail alone (micro-batches stay clean)."""
    results: list[tuple[str, int, Any]] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        with httpx.Client(base_url=iris.url, timeout=10) as c:
            for j in range(20):
                kind = ["setosa", "virginica", "bad"][(i + j) % 3]
                rows = {"setosa": [SETOSA], "virginica": [VIRGINICA, VIRGINICA], "bad": [[1.0, 2.0]]}[kind]
                r = c.post("/v2/models/iris/infer", content=infer_body(rows))
                with lock:
                    results.append((kind, r.status_code, r.json()))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 160
    for kind, status, doc in results:
        if kind == "bad":
            assert status == 400
        else:
            assert status == 200
            expected = {"setosa": ["setosa"], "virginica": ["virginica", "virginica"]}[kind]
            assert doc["outputs"][0]["data"] == expected


# ---- metrics scraped from /metrics ----------------------------------------------------------------


def test_metrics_count_outcomes_features_predictions_and_quality(
    servers: ServerFactory, models: dict[str, Any]
) -> None:
    s = servers.start(*model_args(models, "iris-v1"), *schema_args(models), "--track", "candidate")
    for _ in range(3):
        assert s.post("/v2/models/iris/infer", content=infer_body([SETOSA, VIRGINICA])).status_code == 200
    assert s.post("/v2/models/iris/infer", content=infer_body([[20.0, 3.0, 1.0, 0.1]])).status_code == 422
    assert s.post("/v2/models/iris/infer", content=b"nope").status_code == 400
    assert s.post("/v2/models/iris/predict", json={"instances": [{"sepal_length": 5.0}]}).status_code == 422
    text = s.metrics()
    labels = {"model": "iris", "version": "v1", "track": "candidate"}
    assert metric_value(text, "rollwise_requests_total", outcome="success", **labels) == 3
    assert metric_value(text, "rollwise_requests_total", outcome="client_error", **labels) == 3
    assert metric_value(text, "rollwise_request_duration_seconds_count", **labels) == 6
    assert metric_value(text, "rollwise_inflight_requests", **labels) == 0
    assert metric_value(text, "rollwise_prediction_value_count", **{"class": "setosa"}, **labels) == 3
    assert metric_value(text, "rollwise_prediction_value_count", **{"class": "virginica"}, **labels) == 3
    assert metric_value(text, "rollwise_feature_value_count", feature="petal_length", **labels) == 6
    assert (
        metric_value(text, "rollwise_data_quality_total", feature="sepal_length", problem="out_of_range") == 1
    )
    assert metric_value(text, "rollwise_data_quality_total", feature="petal_width", problem="missing") == 1
    assert metric_value(text, "rollwise_model_loaded", role="primary", **labels) == 1
    # Each feature exports its reference's bins, so PSI can be computed from the buckets.
    reference = json.loads((models["dir"] / models["reference"]).read_text())
    petal_buckets = [
        line for line in text.splitlines() if 'feature="petal_length"' in line and "_bucket" in line
    ]
    assert len(petal_buckets) == len(reference["features"]["petal_length"]["cuts"]) + 1
    assert 'rollwise_feature_psi{feature="petal_length"' in text
    assert metric_value(text, "rollwise_prediction_psi", **labels) > 0
    # The reference's shares, cumulative at the same bounds, for the operator's inputDrift.
    petal = reference["features"]["petal_length"]
    for cut, share in zip(petal["cuts"], np.cumsum(petal["fractions"]), strict=False):
        le = floatToGoString(cut)
        read = metric_value(text, "rollwise_feature_reference_share", feature="petal_length", le=le, **labels)
        assert read == pytest.approx(share), (le, read, share)
        assert any(f'le="{le}"' in line for line in petal_buckets), (le, petal_buckets)  # the same bounds
    assert (
        metric_value(text, "rollwise_feature_reference_share", feature="petal_length", le="+Inf", **labels)
        == 1
    )
    # And the reference's class shares, for monitoring's predictionDrift against the reference.
    for name, share in zip(
        reference["prediction"]["classes"], reference["prediction"]["fractions"], strict=True
    ):
        read = metric_value(text, "rollwise_prediction_reference_share", **{"class": name}, **labels)
        assert read == pytest.approx(share), (name, read, share)


def test_drifted_traffic_raises_psi_above_in_distribution_traffic(
    servers: ServerFactory, models: dict[str, Any]
) -> None:
    data = load_iris().data.tolist()
    calm = servers.start(*model_args(models, "iris-v1"), *schema_args(models))
    drifted = servers.start(*model_args(models, "iris-v1"), *schema_args(models))
    calm.post("/v2/models/iris/infer", content=infer_body(data))
    shifted = [[r[0], r[1], min(7.9, r[2] + 2.0), min(2.9, r[3] + 1.0)] for r in data]
    drifted.post("/v2/models/iris/infer", content=infer_body(shifted))
    calm_psi = calm.sample("rollwise_feature_psi", feature="petal_length")
    drift_psi = drifted.sample("rollwise_feature_psi", feature="petal_length")
    assert calm_psi < 0.01, calm_psi
    assert drift_psi > 0.25, drift_psi
    assert drifted.sample("rollwise_prediction_psi") > calm.sample("rollwise_prediction_psi")


# ---- an Open Inference Protocol client library ----------------------------------------------------


def test_tritons_oip_client_drives_the_server(iris: Server) -> None:
    client = triton.InferenceServerClient(url=f"127.0.0.1:{iris.port}")
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    assert client.get_model_metadata("iris")["inputs"][0]["shape"] == [-1, 4]
    x = np.array([SETOSA, VIRGINICA], dtype=np.float32)
    tensor = triton.InferInput("input-0", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=False)
    wanted = [
        triton.InferRequestedOutput("label", binary_data=False),
        triton.InferRequestedOutput("probabilities", binary_data=False),
    ]
    result = client.infer("iris", [tensor], outputs=wanted, request_id="t1")
    assert result.get_response()["id"] == "t1"
    assert [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label").tolist()] == [
        "setosa",
        "virginica",
    ]
    assert result.as_numpy("probabilities").shape == (2, 3)
    client.close()


# ---- other formats -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["iris-v1-onnx", "iris-mlp-onnx", "iris-mlp-int8"])
def test_onnx_models_float_and_int8_answer_like_sklearn(
    servers: ServerFactory, models: dict[str, Any], key: str
) -> None:
    s = servers.start(
        *model_args(models, key), "--feature-schema", str(models["dir"] / models["feature_schema"])
    )
    meta = s.get("/v2/models/iris").json()
    assert meta["platform"] == "onnx"
    assert meta["inputs"][0]["datatype"] == "FP32"
    r = s.post("/v2/models/iris/infer", content=infer_body([SETOSA, VERSICOLOR, VIRGINICA], "FP64"))
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    assert outputs["label"]["data"] == ["setosa", "versicolor", "virginica"]
    assert outputs["probabilities"]["shape"] == [3, 3]
    assert s.sample("rollwise_prediction_value_count", **{"class": "versicolor"}) == 1
    wrong = s.post("/v2/models/iris/infer", content=infer_body([[True, False, True, False]], "BOOL"))
    assert wrong.status_code == 400 and "the model takes FP32" in wrong.json()["error"]


def test_python_class_model_serves_and_feeds_metrics(servers: ServerFactory, models: dict[str, Any]) -> None:
    s = servers.start(*model_args(models, "iris-rule"))
    assert s.get("/v2/models/iris").json()["platform"] == "python"
    r = s.post("/v2/models/iris/infer", content=infer_body([SETOSA, VIRGINICA], "FP64"))
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == ["setosa", "virginica"]
    assert s.sample("rollwise_prediction_value_count", **{"class": "virginica"}) == 1
    wrong = s.post("/v2/models/iris/infer", content=infer_body([[1.0, 2.0]], "FP64"))
    assert wrong.status_code == 400
