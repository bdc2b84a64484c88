"""The binary tensor extension (#17): unmodified Triton HTTP clients, binary on (their default).

Real `rollwise-serve` processes and `tritonclient.http` as a user installs it: it sends inputs as
raw bytes after `Inference-Header-Content-Length` bytes of JSON and, asked for no output by
name, sets `binary_data_output`. Every datatype the server takes goes through an echo model (a
`python`-format file written here) both ways; Iris goes through scikit-learn at 1 000 rows, and
through the mirror and the A/B forwarder, which must pass binary bodies on intact.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from sklearn.datasets import load_iris

from tests.serving.conftest import Server, ServerFactory, infer_body, model_args
from tests.serving.test_shadow_agreement import python_model

ECHO = """
import numpy as np


class Model:
    batchable = False

    def predict(self, inputs):
        return {"echo_" + name: np.asarray(value) for name, value in inputs.items()}
"""
"""Answers every input back under ``echo_<name>``: a datatype round trip with nothing in between."""

DATATYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}


def sample(datatype: str, rows: int = 1_000) -> np.ndarray[Any, Any]:
    """``rows`` x 3 values spanning the datatype: its extremes, zero, and text with non-ASCII."""
    rng = np.random.default_rng(17)
    dtype = DATATYPES[datatype]
    if datatype == "BOOL":
        return rng.integers(0, 2, (rows, 3)).astype(np.bool_)
    if datatype == "BYTES":
        words = np.array(["setosa", "", "naïve ☃", "x" * 300], dtype=object)
        return words[rng.integers(0, len(words), (rows, 3))]
    if datatype.startswith("FP"):
        info = np.finfo(dtype)
        values = rng.normal(0, 1e3, (rows, 3)).astype(dtype)
        values[0] = [info.max, info.min, info.tiny]
        return values
    info = np.iinfo(dtype)
    values = rng.integers(info.min, info.max, (rows, 3), dtype=dtype, endpoint=True)
    values[0] = [info.min, info.max, 0]
    return values


@pytest.fixture(scope="module")
def echo(servers: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> Server:
    tmp = tmp_path_factory.mktemp("echo")
    return servers.start(*python_model(tmp, "echo.py", ECHO, version="v1", name="echo"))


@pytest.fixture(scope="module")
def iris(servers: ServerFactory, models: dict[str, Any]) -> Server:
    return servers.start(*model_args(models, "iris-v1"))


def client(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=f"127.0.0.1:{server.port}", network_timeout=30)


def as_text(values: np.ndarray[Any, Any]) -> list[Any]:
    return [v.decode() if isinstance(v, bytes) else v for v in values.ravel().tolist()]


def assert_round_trip(back: np.ndarray[Any, Any], x: np.ndarray[Any, Any], datatype: str) -> None:
    """What came back is what was sent: shape, dtype and every element (BYTES as text)."""
    assert back.shape == x.shape
    if datatype == "BYTES":
        assert as_text(back) == x.ravel().tolist()
    else:
        assert back.dtype == x.dtype
        np.testing.assert_array_equal(back, x)


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_every_datatype_round_trips_in_binary_both_ways(echo: Server, datatype: str) -> None:
    x = sample(datatype)
    tensor = triton.InferInput("x", list(x.shape), datatype)
    tensor.set_data_from_numpy(x)  # binary_data=True: tritonclient's default
    with client(echo) as c:
        result = c.infer("echo", [tensor])  # no outputs named: binary_data_output is set
    response = result.get_response()
    [out] = response["outputs"]
    assert out["parameters"]["binary_data_size"] > 0 and "data" not in out
    assert_round_trip(result.as_numpy("echo_x"), x, datatype)


@pytest.mark.parametrize("datatype", ["INT64", "FP32", "BYTES"])
def test_binary_inputs_with_json_outputs_and_the_reverse(echo: Server, datatype: str) -> None:
    """Per-output `binary_data` overrides the request's choice, in either direction."""
    x = sample(datatype, rows=5)
    with client(echo) as c:
        binary_in = triton.InferInput("x", list(x.shape), datatype)
        binary_in.set_data_from_numpy(x)
        json_out = c.infer(
            "echo", [binary_in], outputs=[triton.InferRequestedOutput("echo_x", binary_data=False)]
        )
        json_in = triton.InferInput("x", list(x.shape), datatype)
        json_in.set_data_from_numpy(x, binary_data=False)
        binary_out = c.infer(
            "echo", [json_in], outputs=[triton.InferRequestedOutput("echo_x", binary_data=True)]
        )
    assert "data" in json_out.get_response()["outputs"][0]
    assert "binary_data_size" in binary_out.get_response()["outputs"][0]["parameters"]
    for result in (json_out, binary_out):
        back = result.as_numpy("echo_x")
        if datatype == "BYTES":
            assert as_text(back) == x.ravel().tolist()
        else:
            np.testing.assert_array_equal(back.reshape(x.shape), x)


def test_a_thousand_iris_rows_in_binary_answer_as_they_do_in_json(iris: Server) -> None:
    data = load_iris().data
    rows = np.concatenate([data] * 7)[:1_000].astype(np.float32)
    tensor = triton.InferInput("input-0", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    before = iris.sample("rollwise_requests_total", outcome="success")
    with client(iris) as c:
        result = c.infer("iris", [tensor], request_id="batch-1")
    assert result.get_response()["id"] == "batch-1"
    labels = as_text(result.as_numpy("label"))
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (1_000, 3)
    json_answer = iris.post("/v2/models/iris/infer", content=infer_body(rows.tolist())).json()
    by_name = {o["name"]: o for o in json_answer["outputs"]}
    assert labels == by_name["label"]["data"]
    np.testing.assert_allclose(probabilities.ravel(), by_name["probabilities"]["data"], rtol=1e-6)
    assert iris.sample("rollwise_requests_total", outcome="success") == before + 2
    assert iris.sample("rollwise_prediction_value_count", **{"class": "setosa"}) >= 2 * labels.count("setosa")


def raw_post(server: Server, head: dict[str, Any], blob: bytes, length: int | None = None) -> httpx.Response:
    json_part = orjson.dumps(head)
    size = len(json_part) if length is None else length
    return server.post(
        "/v2/models/iris/infer",
        content=json_part + blob,
        headers={"inference-header-content-length": str(size), "content-type": "application/octet-stream"},
    )


def one_input(size: int, datatype: str = "FP32", shape: list[int] | None = None) -> dict[str, Any]:
    tensor = {"name": "input-0", "datatype": datatype, "shape": shape or [1, 4]}
    return {"inputs": [{**tensor, "parameters": {"binary_data_size": size}}]}


ROW = np.array([[5.1, 3.5, 1.4, 0.2]], dtype="<f4").tobytes()


@pytest.mark.parametrize(
    ("head", "blob", "length", "says"),
    [
        (one_input(16), ROW, 10_000, "the body has only"),
        (one_input(12), ROW, None, "needs 16 bytes but binary_data_size is 12"),
        (one_input(20), ROW, None, "only 16 binary bytes are left"),
        (one_input(8, shape=[1, 2]), ROW, None, "bytes follow the last binary input"),
        (one_input(-1), ROW, None, "binary_data_size must be a non-negative integer"),
        (one_input(16, "BYTES", [1, 1]), struct.pack("<I", 12) + b"\xff\xfe" + b"x" * 10, None, "not UTF-8"),
        (one_input(16, "BYTES", [1, 1]), struct.pack("<I", 99) + b"x" * 12, None, "past the data's end"),
        (
            {"inputs": [{**one_input(16)["inputs"][0], "data": [1, 2, 3, 4]}]},
            ROW,
            None,
            "both data and binary_data_size",
        ),
        (
            {**one_input(16), "outputs": [{"name": "label", "parameters": {"classification": 2}}]},
            ROW,
            None,
            "classification is not supported",
        ),
    ],
)
def test_bad_binary_bodies_are_refused_naming_the_problem(
    iris: Server, head: dict[str, Any], blob: bytes, length: int | None, says: str
) -> None:
    before = iris.sample("rollwise_requests_total", outcome="client_error")
    r = raw_post(iris, head, blob, length)
    assert r.status_code == 400, r.text
    assert says in r.json()["error"], r.json()
    assert iris.sample("rollwise_requests_total", outcome="client_error") == before + 1


def test_a_binary_size_without_the_header_is_refused(iris: Server) -> None:
    r = iris.post("/v2/models/iris/infer", content=orjson.dumps(one_input(16)) + ROW)
    assert r.status_code == 400
    assert "has no Inference-Header-Content-Length header" in r.json()["error"]
    bad = iris.post("/v2/models/iris/infer", content=b"{}", headers={"inference-header-content-length": "x"})
    assert bad.status_code == 400 and "must be a non-negative integer" in bad.json()["error"]


def test_the_mirror_and_the_forwarder_pass_binary_bodies_on(
    fresh_servers: ServerFactory, models: dict[str, Any], tmp_path: Path
) -> None:
    """A binary request is mirrored with its header (the shadow answers it and the answers are
    compared row by row), and one forwarded to the A/B peer comes back binary with the peer's
    version."""
    shadow = fresh_servers.start(*model_args(models, "iris-v1", version="v1-copy"), "--track", "candidate")
    peer = fresh_servers.start(*model_args(models, "iris-v2", version="v2"), "--track", "candidate")
    front = fresh_servers.start(
        *model_args(models, "iris-v1"),
        "--mirror-url",
        shadow.url,
        "--forward-match",
        '[{"header": {"name": "x-group", "value": "b"}}]',
        "--forward-url",
        peer.url,
    )
    rows = load_iris().data[:30].astype(np.float32)
    with client(front) as c:
        for _ in range(3):
            tensor = triton.InferInput("input-0", list(rows.shape), "FP32")
            tensor.set_data_from_numpy(rows)
            assert len(as_text(c.infer("iris", [tensor]).as_numpy("label"))) == 30
        forwarded = c.infer("iris", [tensor], headers={"x-group": "b"})
    assert forwarded.get_response()["model_version"] == "v2"
    assert forwarded.as_numpy("probabilities").shape == (30, 3)
    deadline = time.monotonic() + 15
    while front.sample("rollwise_shadow_compared_total") < 90 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert front.sample("rollwise_shadow_compared_total", peer_version="v1-copy") == 90
    assert front.sample("rollwise_shadow_agreed_total", peer_version="v1-copy") == 90
    assert front.sample("rollwise_shadow_uncomparable_total") == 0
    assert shadow.sample("rollwise_requests_total", outcome="success") == 3
    assert peer.sample("rollwise_requests_total", outcome="success") == 1
