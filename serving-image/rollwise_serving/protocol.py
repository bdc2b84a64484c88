"""Open Inference Protocol v2 over REST: request and response values and their JSON codec.

Plain slotted dataclasses rather than pydantic models: this is the hot path, and decoding a tensor
straight from orjson's lists into one ``numpy`` array costs a few microseconds where a validating
model per element costs tens. Every structural problem still raises ``ProtocolError`` naming the
JSON path and the fix (HTTP 400). Data may be flat or nested (the spec allows both); it must hold
exactly ``prod(shape)`` elements of the declared datatype. NaN and Infinity are not JSON, so they
arrive only as overflowing literals (``1e999``) and are refused as non-finite. A float in an integer
tensor or a number in a BOOL tensor is refused; a JSON ``true`` mixed into numbers reads as 1
(numpy's rule; finding it would cost a Python-level scan of every element).
"""

from __future__ import annotations

import math
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


@dataclass(frozen=True, slots=True)
class InferOutput:
    name: str
    data: np.ndarray[Any, Any]


def decode_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise ProtocolError(f"request body is not valid JSON ({err}); send a JSON object") from err


def decode_infer_request(body: bytes) -> InferRequest:
    doc = decode_json(body)
    if not isinstance(doc, dict):
        raise ProtocolError('request body must be a JSON object like {"inputs": [...]}')
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError(
            '"inputs" must be a non-empty list of tensors {"name", "shape", "datatype", "data"}'
        )
    inputs = tuple(_decode_input(i, raw) for i, raw in enumerate(raw_inputs))
    names = [t.name for t in inputs]
    if len(set(names)) != len(names):
        raise ProtocolError(f'"inputs" names must be unique; got {names}')
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError('"id" must be a string')
    outputs: tuple[str, ...] | None = None
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in raw_outputs
        ):
            raise ProtocolError('"outputs" must be a list of {"name": "..."} objects')
        outputs = tuple(o["name"] for o in raw_outputs)
    parameters = doc.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise ProtocolError('"parameters" must be a JSON object')
    return InferRequest(inputs=inputs, id=request_id, outputs=outputs, parameters=parameters)


def _decode_input(index: int, raw: Any) -> InferInput:
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
    shape = _shape(path, raw.get("shape"))
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
    parameters = raw.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise ProtocolError(f"{path}.parameters must be a JSON object")
    return InferInput(name, datatype, tuple(shape), array.reshape(shape), parameters)


def _shape(path: str, shape: Any) -> list[int]:
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


def encode_outputs(outputs: list[InferOutput]) -> bytes:
    """The ``outputs`` list as JSON: flat row-major data with its shape (the spec's examples).

    Encoded apart from the envelope so the cache can keep it and a hit skips the encoder.
    """
    docs = []
    for out in outputs:
        array = out.data
        if array.dtype.kind in "OUS":
            data: Any = [v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel().tolist()]
        else:
            data = np.ascontiguousarray(array).ravel()
        docs.append(
            {"name": out.name, "datatype": datatype_of(array), "shape": list(array.shape), "data": data}
        )
    return orjson.dumps(docs, option=orjson.OPT_SERIALIZE_NUMPY)


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
