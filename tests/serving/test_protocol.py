"""The OIP codec on its own: every datatype, shapes, and each way a request can be malformed."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rollwise_serving.protocol import (
    InferOutput,
    ProtocolError,
    decode_infer_request,
    encode_infer_response,
    encode_outputs,
)


def body(**tensor: object) -> bytes:
    t = {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]} | tensor
    return json.dumps({"inputs": [t]}).encode()


@pytest.mark.parametrize(
    ("datatype", "data", "dtype"),
    [
        pytest.param("FP32", [[1.5, 2], [3, 4]], np.float32, id="FP32 nested with ints is read as floats"),
        pytest.param("FP64", [1.5, 2, 3, 4], np.float64, id="FP64 flat"),
        pytest.param("INT32", [1, 2, 3, 4], np.int32, id="INT32"),
        pytest.param("INT64", [[1, 2], [3, 4]], np.int64, id="INT64 nested"),
        pytest.param("BOOL", [True, False, True, True], np.bool_, id="BOOL"),
        pytest.param("BYTES", [["a", "b"], ["c", "d"]], object, id="BYTES strings"),
    ],
)
def test_each_datatype_decodes_to_its_numpy_dtype(datatype: str, data: list[object], dtype: type) -> None:
    req = decode_infer_request(body(datatype=datatype, data=data))
    tensor = req.inputs[0]
    assert tensor.data.shape == (2, 2)
    assert tensor.data.dtype == np.dtype(dtype)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(b"{", "not valid JSON", id="truncated JSON"),
        pytest.param(b"[1]", "must be a JSON object", id="a list instead of an object"),
        pytest.param(b'{"inputs": []}', "non-empty list", id="no inputs"),
        pytest.param(body(datatype="FP8"), "datatype: 'FP8' is not valid", id="unknown datatype"),
        pytest.param(body(shape=[2, -1]), "shape: [2, -1] is not valid", id="negative dimension"),
        pytest.param(body(shape="2x2"), "shape: '2x2' is not valid", id="shape not a list"),
        pytest.param(body(shape=[3, 2]), "needs 6 elements but data has 4", id="data does not fill shape"),
        pytest.param(body(datatype="INT32", data=[1.5, 2, 3, 4]), "not INT32", id="float in an int tensor"),
        pytest.param(
            body(datatype="FP32", data=["a", "b", "c", "d"]),
            "strings, which is not FP32",
            id="strings as FP32",
        ),
        pytest.param(body(datatype="BOOL", data=[1, 0, 1, 0]), "not BOOL", id="ints as BOOL"),
        pytest.param(
            body(datatype="BYTES", data=[1, 2, 3, 4]), "BYTES elements must be strings", id="numbers as BYTES"
        ),
        pytest.param(body(datatype="INT8", data=[1, 2, 3, 300]), "out of the INT8 range", id="INT8 overflow"),
        pytest.param(
            body(datatype="FP32", data=[1, 2, 3, 1e300]), "non-finite", id="FP32 overflow becomes inf"
        ),
        pytest.param(body(data=[[1, 2], [3]]), "cannot be read as FP32", id="ragged nested data"),
        pytest.param(body(name=""), "name must be a non-empty string", id="empty name"),
        pytest.param(
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}', "data is missing", id="no data"
        ),
        pytest.param(
            b'{"inputs": [{"name":"x","shape":[1],"datatype":"FP32","data":[1]}], "id": 5}',
            '"id" must be a string',
            id="id not a string",
        ),
        pytest.param(
            b'{"inputs": [{"name":"x","shape":[1],"datatype":"FP32","data":[1]}], "outputs": ["y"]}',
            '"outputs" must be a list of',
            id="outputs as names",
        ),
        pytest.param(
            b'{"inputs": [{"name":"x","shape":[1],"datatype":"FP32","data":[1]},'
            b'{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}',
            "names must be unique",
            id="duplicate input names",
        ),
        pytest.param(
            b'{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[NaN]}]}',
            "not valid JSON",
            id="NaN literal",
        ),
    ],
)
def test_malformed_requests_raise_a_protocol_error_naming_the_problem(raw: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as err:
        decode_infer_request(raw)
    assert message in str(err.value)


def test_outputs_and_id_and_parameters_are_read() -> None:
    raw = (
        b'{"id":"r1","parameters":{"a":1},"outputs":[{"name":"label"}],'
        b'"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}'
    )
    req = decode_infer_request(raw)
    assert (req.id, req.outputs, req.parameters) == ("r1", ("label",), {"a": 1})


def test_response_is_flat_row_major_with_shape_and_datatype() -> None:
    outputs = encode_outputs(
        [
            InferOutput("p", np.array([[0.25, 0.75], [1.0, 0.0]])),
            InferOutput("label", np.array(["a", "b"], dtype=object)),
        ]
    )
    doc = orjson.loads(encode_infer_response("m", "v1", outputs, "r1"))
    assert doc == {
        "model_name": "m",
        "model_version": "v1",
        "id": "r1",
        "outputs": [
            {"name": "p", "datatype": "FP64", "shape": [2, 2], "data": [0.25, 0.75, 1.0, 0.0]},
            {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]},
        ],
    }


@given(
    st.lists(st.lists(st.floats(-1e6, 1e6, width=32), min_size=3, max_size=3), min_size=1, max_size=20),
    st.sampled_from(["FP32", "FP64"]),
)
def test_any_finite_float_matrix_round_trips(rows: list[list[float]], datatype: str) -> None:
    req = decode_infer_request(
        orjson.dumps({"inputs": [{"name": "x", "shape": [len(rows), 3], "datatype": datatype, "data": rows}]})
    )
    out = orjson.loads(
        encode_infer_response("m", "1", encode_outputs([InferOutput("y", req.inputs[0].data)]))
    )
    got = np.array(out["outputs"][0]["data"]).reshape(out["outputs"][0]["shape"])
    np.testing.assert_allclose(
        got, np.array(rows, dtype=np.float32 if datatype == "FP32" else np.float64), rtol=1e-6, atol=1e-30
    )
