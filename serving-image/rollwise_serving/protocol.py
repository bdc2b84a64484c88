"""Open Inference Protocol v2 over REST: request and response values and their JSON codec.

Plain slotted dataclasses rather than pydantic models: this is the hot path, and decoding a tensor
straight from orjson's lists into one ``numpy`` array costs a few microseconds where a validating
model per element costs tens. Every structural problem still raises ``ProtocolError`` naming the
JSON path and the fix (HTTP 400). Data may be flat or nested (the spec allows both); it must hold
exactly ``prod(shape)`` elements of the declared datatype. NaN and Infinity are not JSON, so they
arrive only as overflowing literals (``1e999``) and are refused as non-finite. A float in an integer
tensor or a number in a BOOL tensor is refused; a JSON ``true`` mixed into numbers reads as 1
(numpy's rule; finding it would cost a Python-level scan of every element).

Parameters: ``binary_data_output`` (request) and ``binary_data`` (an output) are honoured, with
``binary_data_size`` on inputs (the binary extension, ``binary``); an output's ``classification``
is refused with a 400; every other request, input or output parameter (Triton's
``sequence_id``, ``priority``, ``timeout``, custom ones) is accepted and ignored.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import orjson

# datatype -> numpy dtype. FP16 and the narrow ints are accepted too since clients send them.
DATATYPES: Final[dict[str, np.dtype[Any]]] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_KIND_TO_DATATYPE: Final[dict[str, str]] = {
    "b": "BOOL",
    "O": "BYTES",
    "U": "BYTES",
    "S": "BYTES",
}
MAX_RANK: Final = 8


def datatype_of(array: np.ndarray[Any, Any]) -> str:
    """The OIP datatype naming a numpy array's dtype (strings and objects are BYTES)."""
    kind = array.dtype.kind
    if kind in _KIND_TO_DATATYPE:
        return _KIND_TO_DATATYPE[kind]
    for name, dtype in DATATYPES.items():
        if dtype == array.dtype:
            return name
    raise ValueError(f"numpy dtype {array.dtype} has no Open Inference Protocol datatype")


class ProtocolError(ValueError):
    """The request is not a valid OIP request; the message names the JSON path and the fix."""


@dataclass(frozen=True, slots=True)
class InferInput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray[Any, Any]
    parameters: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class InferRequest:
    inputs: tuple[InferInput, ...]
    id: str | None = None
    outputs: tuple[str, ...] | None = None
    """Names of the outputs asked for; None means every output the model has."""
    parameters: dict[str, Any] | None = None
    binary_output: bool = False
    """``parameters.binary_data_output``: every output as raw bytes (the binary extension)."""
    binary_outputs: dict[str, bool] | None = None
    """An output's own ``parameters.binary_data``, which overrides ``binary_output`` for it."""

    def wants_binary(self, name: str) -> bool:
        if self.binary_outputs is not None and name in self.binary_outputs:
            return self.binary_outputs[name]
        return self.binary_output

    @property
    def any_binary(self) -> bool:
        return self.binary_output or bool(self.binary_outputs and any(self.binary_outputs.values()))


@dataclass(frozen=True, slots=True)
class InferOutput:
    name: str
    data: np.ndarray[Any, Any]


def decode_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        if b'"binary_data_size"' in body:  # only on this error path: the usual mistake with raw tensors
            raise ProtocolError(
                "request body is JSON followed by binary tensors but has no "
                "Inference-Header-Content-Length header; send it with the JSON part's length"
            ) from err
        raise ProtocolError(f"request body is not valid JSON ({err}); send a JSON object") from err


BinaryReader = Callable[[str, str, tuple[int, ...], Any], "np.ndarray[Any, Any] | None"]
"""Reads an input's raw bytes (``binary``): (path, datatype, shape, parameters) -> its array, or
None when its data is in the JSON."""


def decode_infer_request(body: bytes, binary: BinaryReader | None = None) -> InferRequest:
    return decode_request_doc(decode_json(body), binary)


def decode_request_doc(doc: Any, binary: BinaryReader | None = None) -> InferRequest:
    """An OIP request from its parsed JSON; ``binary`` reads inputs sent as raw bytes."""
    if not isinstance(doc, dict):
        raise ProtocolError('request body must be a JSON object like {"inputs": [...]}')
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError(
            '"inputs" must be a non-empty list of tensors {"name", "shape", "datatype", "data"}'
        )
    inputs = tuple(_decode_input(i, raw, binary) for i, raw in enumerate(raw_inputs))
    names = [t.name for t in inputs]
    if len(set(names)) != len(names):
        raise ProtocolError(f'"inputs" names must be unique; got {names}')
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError('"id" must be a string')
    parameters = doc.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise ProtocolError('"parameters" must be a JSON object')
    binary_output = _flag("parameters.binary_data_output", (parameters or {}).get("binary_data_output"))
    outputs: tuple[str, ...] | None = None
    per_output: dict[str, bool] = {}
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in raw_outputs
        ):
            raise ProtocolError('"outputs" must be a list of {"name": "..."} objects')
        outputs = tuple(o["name"] for o in raw_outputs)
        for i, o in enumerate(raw_outputs):
            per_output.update(_output_parameters(i, o))
    return InferRequest(
        inputs=inputs,
        id=request_id,
        outputs=outputs,
        parameters=parameters,
        binary_output=bool(binary_output),
        binary_outputs=per_output or None,
    )


def _flag(path: str, value: Any) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ProtocolError(f"{path} must be true or false")
    return value


def _output_parameters(index: int, raw: dict[str, Any]) -> dict[str, bool]:
    """A requested output's parameters: ``binary_data`` is honoured; ``classification`` (Triton's
    top-k strings) is refused rather than silently ignored; others are accepted and ignored."""
    path = f"outputs[{index}] ({raw['name']!r}).parameters"
    parameters = raw.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise ProtocolError(f"{path} must be a JSON object")
    refuse_classification(path, parameters)
    flag = _flag(f"{path}.binary_data", parameters.get("binary_data"))
    return {} if flag is None else {raw["name"]: flag}


def refuse_classification(path: str, parameters: dict[str, Any]) -> None:
    """Triton's ``classification`` (top-k strings) is refused rather than silently ignored; the
    REST and gRPC decoders both ask here, so both say the same."""
    if parameters.get("classification"):
        raise ProtocolError(
            f"{path}.classification is not supported by this server; ask for the label and "
            "probabilities outputs instead"
        )


def _decode_input(index: int, raw: Any, binary: BinaryReader | None = None) -> InferInput:
    path = f"inputs[{index}]"
    if not isinstance(raw, dict):
        raise ProtocolError(f"{path} must be an object with name, shape, datatype and data")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"{path}.name must be a non-empty string")
    path = f"inputs[{index}] ({name!r})"
    datatype = raw.get("datatype")
    if datatype not in DATATYPES:
        raise ProtocolError(f"{path}.datatype: {datatype!r} is not valid; use one of {', '.join(DATATYPES)}")
    shape = check_shape(path, raw.get("shape"))
    parameters = raw.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise ProtocolError(f"{path}.parameters must be a JSON object")
    raw_array = _binary_input(path, raw, datatype, tuple(shape), parameters, binary=binary)
    if raw_array is not None:
        return InferInput(name, datatype, tuple(shape), raw_array, parameters)
    if "data" not in raw:
        raise ProtocolError(f"{path}.data is missing")
    data = raw["data"]
    if not isinstance(data, list):
        data = [data]
    expected = math.prod(shape)
    array = _to_array(path, datatype, data)
    _check_nesting(path, shape, data, array)
    array = array.ravel()
    if array.size != expected:
        raise ProtocolError(
            f"{path}: shape {shape} needs {expected} elements but data has {array.size}; "
            "make data match the shape"
        )
    _check_elements(path, datatype, array)
    return InferInput(name, datatype, tuple(shape), array.reshape(shape), parameters)


def _binary_input(
    path: str,
    raw: dict[str, Any],
    datatype: str,
    shape: tuple[int, ...],
    parameters: dict[str, Any] | None,
    *,
    binary: BinaryReader | None,
) -> np.ndarray[Any, Any] | None:
    """An input sent as raw bytes (``binary_data_size``), or None when its data is in the JSON."""
    if binary is None:
        if isinstance(parameters, dict) and "binary_data_size" in parameters:
            raise ProtocolError(
                f"{path}.parameters.binary_data_size is set but the request has no "
                "Inference-Header-Content-Length header; send it with the JSON part's length"
            )
        return None
    array = binary(path, datatype, shape, parameters)
    if array is not None and "data" in raw:
        raise ProtocolError(f"{path} has both data and binary_data_size; send one of them")
    return array


def check_shape(path: str, shape: Any) -> list[int]:
    """A tensor's shape, refused naming ``path`` unless it is 1 to ``MAX_RANK`` non-negative ints
    (REST's JSON list and gRPC's repeated int64 alike)."""
    if (
        not isinstance(shape, list)
        or not 0 < len(shape) <= MAX_RANK
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise ProtocolError(
            f"{path}.shape: {shape!r} is not valid; use a list of 1 to {MAX_RANK} non-negative ints"
        )
    return shape


def _check_nesting(path: str, shape: list[int], data: list[Any], array: np.ndarray[Any, Any]) -> None:
    """Flat data is read row-major into `shape`; nested data must be nested exactly as `shape` (a
    rank-5 list is not a `[1, 4]` tensor just because it holds four numbers)."""
    if not data or not isinstance(data[0], list):
        return
    nested = array.shape if array.dtype.kind != "O" else _nested_shape(data)
    if tuple(nested) != tuple(shape):
        raise ProtocolError(
            f"{path}.data is nested as {list(nested)} but shape is {shape}; send flat data, or nest it "
            "exactly as the shape"
        )


def _nested_shape(data: list[Any]) -> tuple[int, ...]:
    """The shape of a nested list, or () when it is ragged (which then never matches a shape)."""
    dims: list[int] = []
    level: list[Any] = data
    while isinstance(level, list):
        dims.append(len(level))
        if not level:
            break
        if any(isinstance(x, list) != isinstance(level[0], list) for x in level):
            return ()
        if isinstance(level[0], list) and any(len(x) != len(level[0]) for x in level):
            return ()
        level = level[0]
    return tuple(dims)


def _check_elements(path: str, datatype: str, array: np.ndarray[Any, Any]) -> None:
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in array.flat):
            raise ProtocolError(f"{path}.data: BYTES elements must be strings")
    elif array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ProtocolError(
            f"{path}.data holds a non-finite value (overflow of {datatype}); send finite numbers"
        )


def _to_array(path: str, datatype: str, data: list[Any]) -> np.ndarray[Any, Any]:
    dtype = DATATYPES[datatype]
    try:
        if datatype == "BYTES":
            flat = _flatten(data)
            array = np.empty(len(flat), dtype=object)
            array[:] = flat
            return array
        # Parse strictly: a bool in an int tensor or a float in an int tensor is an error, not a cast.
        array = np.asarray(data)
        kind = array.dtype.kind
        if kind == "f" and dtype.kind in "iu":
            # JSON integers past int64 (UINT64 above 2**63) next to smaller ones make numpy pick
            # float64, losing digits: read them as the exact integers they are.
            array = _exact_integers(path, datatype, array, data)
            kind = array.dtype.kind
        if datatype == "BOOL":
            ok = kind == "b"
        elif dtype.kind in "iu":
            ok = kind in "iu"
        else:
            ok = kind in "iuf"
        if not ok:
            got = {"b": "booleans", "U": "strings", "O": "mixed or ragged values"}.get(kind, array.dtype.name)
            raise ProtocolError(f"{path}.data holds {got}, which is not {datatype}; send {datatype} values")
        with np.errstate(over="ignore"):
            if dtype.kind in "iu" and array.size and not _fits(array, dtype):
                raise ProtocolError(f"{path}.data holds a value out of the {datatype} range")
            return array.astype(dtype, copy=False)  # as nested as `data`: `_check_nesting` reads it
    except ProtocolError:
        raise
    except (ValueError, TypeError, OverflowError) as err:
        raise ProtocolError(
            f"{path}.data cannot be read as {datatype} ({err}); send a flat or nested list"
        ) from err


def _exact_integers(
    path: str, datatype: str, array: np.ndarray[Any, Any], data: list[Any]
) -> np.ndarray[Any, Any]:
    flat = _flatten(data)
    if not flat or not all(type(v) is int for v in flat):
        return array
    info = np.iinfo(DATATYPES[datatype])
    if min(flat) < info.min or max(flat) > info.max:
        raise ProtocolError(f"{path}.data holds a value out of the {datatype} range")
    return np.array(flat, dtype=DATATYPES[datatype]).reshape(array.shape)


def _fits(array: np.ndarray[Any, Any], dtype: np.dtype[Any]) -> bool:
    info = np.iinfo(dtype)
    return bool(array.min() >= info.min and array.max() <= info.max)


def _flatten(data: list[Any]) -> list[Any]:
    out: list[Any] = []
    stack: list[Any] = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def output_header(out: InferOutput) -> dict[str, Any]:
    """An output's ``name``, ``datatype`` and ``shape``: what every encoding of it starts with."""
    return {"name": out.name, "datatype": datatype_of(out.data), "shape": list(out.data.shape)}


def json_data(array: np.ndarray[Any, Any]) -> Any:
    """An output's ``data`` as JSON takes it: flat row-major, BYTES as text."""
    if array.dtype.kind in "OUS":
        return [v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel().tolist()]
    return np.ascontiguousarray(array).ravel()


def encode_outputs(outputs: list[InferOutput]) -> bytes:
    """The ``outputs`` list as JSON: flat row-major data with its shape (the spec's examples).

    Encoded apart from the envelope so the cache can keep it and a hit skips the encoder.
    """
    docs = [{**output_header(out), "data": json_data(out.data)} for out in outputs]
    return orjson.dumps(docs, option=orjson.OPT_SERIALIZE_NUMPY)


def outputs_from_json(outputs_json: bytes) -> list[InferOutput]:
    """``encode_outputs``'s JSON back as tensors: a cached answer asked for in binary."""
    out = []
    for doc in orjson.loads(outputs_json):
        array = _to_array("outputs", doc["datatype"], doc["data"]).reshape(doc["shape"])
        out.append(InferOutput(doc["name"], array))
    return out


def encode_infer_response(
    model_name: str,
    model_version: str,
    outputs_json: bytes,
    request_id: str | None = None,
    parameters: dict[str, Any] | None = None,
) -> bytes:
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    if parameters:
        doc["parameters"] = parameters
    doc["outputs"] = orjson.Fragment(outputs_json)
    return orjson.dumps(doc)
