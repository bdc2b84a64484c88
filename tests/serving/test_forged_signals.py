"""A client cannot forge the signals the judge reads, and no slow client can hold the server.

Every case runs against a real `rollwise-serve` and asserts the answer (status, message) and the
exact counter deltas: a request the caller could have avoided moves `client_error` only, never
`server_error`, and no observation can make a histogram non-finite.
"""

from __future__ import annotations

import hashlib
import json
import math
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OrdinalEncoder, StandardScaler

from tests.serving.conftest import (
    SETOSA,
    Server,
    ServerFactory,
    infer_body,
    metric_value,
    model_args,
    schema_args,
    stop,
)

OUTCOMES = ("success", "client_error", "server_error", "fallback")


def outcomes(server: Server) -> dict[str, float]:
    text = server.metrics()
    return {o: metric_value(text, "rollwise_requests_total", outcome=o) for o in OUTCOMES}


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in OUTCOMES if after[k] != before[k]}


def bytes_body(values: list[str], rows: int = 1) -> bytes:
    doc = {
        "inputs": [
            {"name": "input-0", "shape": [rows, len(values) // rows], "datatype": "BYTES", "data": values}
        ]
    }
    return json.dumps(doc).encode()


def _pin(model: Any, directory: Path) -> tuple[Path, str]:
    path = directory / "model.joblib"
    joblib.dump(model, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _iris_like(n: int = 150) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(0)
    x = rng.normal([5.8, 3.0, 3.7, 1.2], [0.8, 0.4, 1.7, 0.7], size=(n, 4)).round(1)
    return x, (x[:, 2] > 3.0).astype(int) + (x[:, 3] > 1.7).astype(int)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The reporter's model: StandardScaler + LogisticRegression, numbers only."""
    x, y = _iris_like()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    return _pin(model, tmp_path_factory.mktemp("pipeline"))


@pytest.fixture(scope="module")
def text_pipeline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A model that takes strings (an encoder on the first column, numbers parsed by the scaler):
    BYTES are values for it, so the schema is what stands between text and its predict."""
    x, y = _iris_like()
    columns = make_column_transformer(
        (OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), [0]),
        (StandardScaler(), [1, 2, 3]),
    )
    model = make_pipeline(columns, LogisticRegression(max_iter=500)).fit(x.astype(str).astype(object), y)
    return _pin(model, tmp_path_factory.mktemp("text-pipeline"))


def pipeline_args(pipeline: tuple[Path, str]) -> list[str]:
    path, digest = pipeline
    return [
        "--model-uri",
        str(path),
        "--sha256",
        digest,
        "--format",
        "sklearn",
        "--name",
        "iris",
        "--version",
        "v1",
    ]


@pytest.fixture(scope="module")
def with_schema(servers: ServerFactory, models: dict[str, Any], text_pipeline: tuple[Path, str]) -> Server:
    return servers.start(*pipeline_args(text_pipeline), *schema_args(models))


@pytest.fixture(scope="module")
def numeric_with_schema(servers: ServerFactory, models: dict[str, Any], pipeline: tuple[Path, str]) -> Server:
    return servers.start(*pipeline_args(pipeline), *schema_args(models))


@pytest.fixture(scope="module")
def without_schema(servers: ServerFactory, pipeline: tuple[Path, str]) -> Server:
    return servers.start(*pipeline_args(pipeline))


@pytest.fixture(scope="module")
def onnx(servers: ServerFactory, models: dict[str, Any]) -> Server:
    return servers.start(*model_args(models, "iris-v1-onnx"))


# ---- BYTES tensors get the checks numbers get ------------------------------------------------


def test_bytes_out_of_range_is_refused_like_the_same_numbers(with_schema: Server) -> None:
    before = outcomes(with_schema)
    quality = with_schema.sample("rollwise_data_quality_total", feature="petal_width", problem="out_of_range")
    r = with_schema.post("/v2/models/iris/infer", content=bytes_body(["5.1", "3.5", "1.4", "99"]))
    numbers = with_schema.post("/v2/models/iris/infer", content=infer_body([[5.1, 3.5, 1.4, 99]]))
    assert (r.status_code, numbers.status_code) == (422, 422)
    assert r.json()["details"][0]["problem"] == "out_of_range"
    assert r.json()["details"][0]["feature"] == "petal_width"
    assert delta(before, outcomes(with_schema)) == {"client_error": 2}
    after = with_schema.sample("rollwise_data_quality_total", feature="petal_width", problem="out_of_range")
    assert after - quality == 2


@pytest.mark.parametrize("forged", ["nan", "inf", "-Infinity", "a", "1e999", "", "0x10"])
def test_bytes_that_are_not_finite_numbers_are_client_errors(with_schema: Server, forged: str) -> None:
    before = outcomes(with_schema)
    r = with_schema.post("/v2/models/iris/infer", content=bytes_body(["5.1", "3.5", forged, "0.2"]))
    assert r.status_code == 422, r.text
    detail = r.json()["details"][0]
    assert (detail["feature"], detail["problem"]) == ("petal_length", "rejected")
    assert "is not a finite number; send a number" in detail["msg"]
    assert delta(before, outcomes(with_schema)) == {"client_error": 1}


def test_a_model_that_takes_strings_answers_valid_ones(with_schema: Server) -> None:
    r = with_schema.post("/v2/models/iris/infer", content=bytes_body([str(v) for v in SETOSA]))
    assert r.status_code == 200, r.text


def test_numbers_reach_a_model_fitted_on_strings_as_their_text(with_schema: Server) -> None:
    """Hypothesis found it: the text pipeline failed on any numeric tensor (500, `server_error`),
    so a client sending FP64 could make a string-fitted candidate look broken. It now gets the
    numbers' decimal text and answers as for the same values in BYTES."""
    before = outcomes(with_schema)
    doc = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": SETOSA}]}
    numbers = with_schema.post("/v2/models/iris/infer", content=json.dumps(doc).encode())
    text = with_schema.post("/v2/models/iris/infer", content=bytes_body([str(float(v)) for v in SETOSA]))
    assert numbers.status_code == 200, numbers.text
    assert numbers.json()["outputs"] == text.json()["outputs"]
    assert delta(before, outcomes(with_schema)) == {"success": 2}


@pytest.mark.parametrize("server", ["without_schema", "numeric_with_schema"])
def test_a_numeric_pipeline_refuses_bytes(server: str, request: pytest.FixtureRequest) -> None:
    """The reporter's StandardScaler pipeline took BYTES straight to predict (it "had steps")."""
    numeric: Server = request.getfixturevalue(server)
    before = outcomes(numeric)
    r = numeric.post("/v2/models/iris/infer", content=bytes_body(["5.1", "3.5", "a", "0.2"]))
    assert r.status_code == 400
    assert "input 'input-0' is BYTES; this model takes numbers" in r.json()["error"]
    assert delta(before, outcomes(numeric)) == {"client_error": 1}


# ---- values finite in the request but not in the model's dtype -------------------------------


def test_fp64_beyond_fp32_is_refused_before_the_cast(onnx: Server) -> None:
    before = outcomes(onnx)
    r = onnx.post("/v2/models/iris/infer", content=infer_body([[1e300, 3.5, 1.4, 0.2]], "FP64"))
    assert r.status_code == 400
    assert "beyond FP32's range" in r.json()["error"]
    assert delta(before, outcomes(onnx)) == {"client_error": 1}
    text = onnx.metrics()
    assert math.isfinite(metric_value(text, "rollwise_prediction_value_sum"))


# ---- the smaller items -----------------------------------------------------------------------


def test_nested_data_must_be_nested_as_the_shape(with_schema: Server) -> None:
    doc = {
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [[[[[5.1, 3.5, 1.4, 0.2]]]]]}]
    }
    r = with_schema.post("/v2/models/iris/infer", json=doc)
    assert r.status_code == 400
    assert "is nested as [1, 1, 1, 1, 4] but shape is [1, 4]" in r.json()["error"]


def test_uint64_above_2_63_is_read_exactly(without_schema: Server) -> None:
    doc = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "UINT64", "data": [1, 2, 2**63 + 5, 0]}]}
    r = without_schema.post("/v2/models/iris/infer", json=doc)
    assert r.status_code == 200, r.text


def test_405_names_the_allowed_method(with_schema: Server) -> None:
    for path, allowed in [
        ("/v2/models/iris/infer", "POST"),
        ("/v2/health/ready", "GET"),
        ("/metrics", "GET"),
    ]:
        r = httpx.request("PUT", with_schema.url + path, timeout=5)
        assert r.status_code == 405
        assert r.headers["allow"] == allowed


def test_an_unpinned_onnx_model_is_not_reported_verified(
    fresh_servers: ServerFactory, models: dict[str, Any]
) -> None:
    entry = models["models"]["iris-v1-onnx"]
    uri = str(models["dir"] / entry["file"])
    server = fresh_servers.start("--model-uri", uri, "--format", "onnx", "--name", "iris", "--version", "v1")
    reason = server.get("/v2/health/ready").json()["models"][0]["reason"]
    assert reason.startswith("loaded, not verified: no digest pinned")
    assert entry["sha256"] in reason


def test_a_file_that_is_not_a_joblib_artifact_says_so(fresh_servers: ServerFactory, tmp_path: Path) -> None:
    bogus = tmp_path / "model.joblib"
    bogus.write_bytes(b"\x08not a pickle at all")
    digest = hashlib.sha256(bogus.read_bytes()).hexdigest()
    server = fresh_servers.start(*pipeline_args((bogus, digest)), wait_ready=False)
    reason = ""
    for _ in range(50):
        reason = server.get("/v2/health/ready").json()["reason"]
        if "not a joblib" in reason:
            break
        time.sleep(0.1)
    assert "model.joblib is not a joblib or pickle file scikit-learn can load" in reason
    assert "check --format" in reason


# ---- slow and malformed clients --------------------------------------------------------------


def raw_exchange(server: Server, data: bytes, wait: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.fixture(scope="module")
def strict(servers: ServerFactory, models: dict[str, Any]) -> Server:
    return servers.start(*model_args(models, "iris-v1"), "--request-timeout-seconds", "1")


def test_a_body_shorter_than_its_content_length_gets_408(strict: Server) -> None:
    before = outcomes(strict)
    head = b"POST /v2/models/iris/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    answer = raw_exchange(strict, head + b"content-length: 400\r\n\r\n" + infer_body([SETOSA]))
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"--request-timeout-seconds" in answer
    assert delta(before, outcomes(strict)) == {"client_error": 1}
    assert strict.sample("rollwise_inflight_requests") == 0


def test_headers_that_never_end_get_408(strict: Server) -> None:
    answer = raw_exchange(strict, b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n")
    assert answer.startswith(b"HTTP/1.1 408 ")


def test_oversized_and_too_many_headers_get_431(strict: Server) -> None:
    big = raw_exchange(
        strict, b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 20000 + b"\r\n\r\n"
    )
    assert big.startswith(b"HTTP/1.1 431 ") and b"--max-header-bytes" in big
    many = b"".join(b"x-h%d: 1\r\n" % i for i in range(150))
    answer = raw_exchange(strict, b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n" + many + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ") and b"--max-headers" in answer
    assert strict.get("/v2/health/live").status_code == 200


@pytest.fixture
def stalled(
    fresh_servers: ServerFactory, models: dict[str, Any]
) -> Iterator[tuple[Server, list[socket.socket]]]:
    server = fresh_servers.start(*model_args(models, "iris-v1"))
    sockets = []
    for _ in range(200):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(b"POST /v2/models/iris/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{")
        sockets.append(s)
    yield server, sockets
    for s in sockets:
        s.close()


def test_stalled_uploads_neither_block_answers_nor_shutdown(
    stalled: tuple[Server, list[socket.socket]],
) -> None:
    server, _ = stalled
    deadline = time.monotonic() + 10
    while server.sample("rollwise_inflight_requests") < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.sample("rollwise_inflight_requests") == 200  # every upload is waiting for its body
    assert server.post("/v2/models/iris/infer", content=infer_body([SETOSA])).status_code == 200
    stop(server.proc, timeout=5)  # SIGTERM; kill() would follow after 5 s
    assert server.proc.returncode == -15  # uvicorn re-raises SIGTERM once it has shut down
    logs = server.logs()
    assert "Traceback" not in logs
    assert "Application shutdown complete" in logs


# ---- no request yields 5xx or a non-finite metric ----------------------------------------------

DATATYPES = ["BOOL", "INT8", "INT32", "INT64", "UINT8", "UINT64", "FP16", "FP32", "FP64", "BYTES"]
values = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e300, -1e300, 1e39, 65504.0, 1e-320]),
    st.booleans(),
    st.text(max_size=8),
    st.sampled_from(["nan", "inf", "-inf", "1e999", "ü", "5.1", " 3 ", "\u0000"]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(datatype=st.sampled_from(DATATYPES), data=st.lists(values, min_size=4, max_size=4))
@example(datatype="FP16", data=[3.0, 2.0, True, 0])  # a 500 from the text pipeline once
def test_no_tensor_makes_a_5xx_or_a_non_finite_metric(
    with_schema: Server, onnx: Server, datatype: str, data: list[Any]
) -> None:
    doc = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": datatype, "data": data}]}
    for server in (with_schema, onnx):
        r = httpx.post(server.url + "/v2/models/iris/infer", content=json.dumps(doc).encode(), timeout=10)
        assert r.status_code < 500, (server.args, doc, r.text)


def test_after_every_forged_request_the_metrics_are_finite(with_schema: Server, onnx: Server) -> None:
    """Runs after the property test in this module: whatever it sent, no series is NaN or Inf."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    for server in (with_schema, onnx):
        assert outcomes(server)["server_error"] == 0
        for family in text_string_to_metric_families(server.metrics()):
            for sample in family.samples:
                if not sample.name.endswith("_bucket") or "le" not in sample.labels:
                    assert math.isfinite(sample.value), (server.args, sample)
