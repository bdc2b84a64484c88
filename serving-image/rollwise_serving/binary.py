"""The binary tensor extension of OIP REST: what Triton's and KServe's clients send by default.

A body is a JSON header of ``Inference-Header-Content-Length`` bytes followed by raw tensors: an
input whose ``parameters.binary_data_size`` is set has no ``data`` in the JSON, its bytes come
next in the body, in input order. Elements are little-endian in row-major order; BOOL is one byte
each; BYTES elements are each a 4-byte little-endian length and the bytes. Answers come back the
same way for the outputs asked for in binary (``parameters.binary_data_output`` for all, an
output's ``parameters.binary_data`` for one), with the same header naming the JSON's length.

BYTES are text in this server (labels, feature strings): binary BYTES must be UTF-8, else the
request is refused naming the input. BF16 has no numpy dtype and is refused like any unknown
datatype. Every size is checked against the shape and the body before anything is read, so a
lying header is a 400, never an out-of-bounds read.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import orjson

from rollwise_serving.protocol import (
    DATATYPES,
    InferOutput,
    InferRequest,
    ProtocolError,
    decode_json,
    decode_request_doc,
    json_data,
    output_header,
)

HEADER: Final = b"inference-header-content-length"
"""The request and response header (lower-case, as ASGI gives it) naming the JSON part's length."""
CONTENT_TYPE: Final = b"application/octet-stream"
_LENGTH = struct.Struct("<I")


def header_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    """The JSON header's length when the body carries binary tensors, else None."""
    for name, value in headers:
        if name == HEADER:
            text = value.strip()
            if not text.isdigit():
                raise ProtocolError(
                    f"Inference-Header-Content-Length must be a non-negative integer; got {value!r}"
                )
            return int(text)
    return None


def split(body: bytes, length: int | None) -> tuple[bytes, memoryview]:
    """The JSON part and the binary part of a body (``length`` None: all JSON)."""
    if length is None:
        return body, memoryview(b"")
    if length > len(body):
        raise ProtocolError(
            f"Inference-Header-Content-Length is {length} but the body has only {len(body)} bytes; "
            "send the length of the JSON part"
        )
    view = memoryview(body)
    return bytes(view[:length]), view[length:]


def decode_infer_request(body: bytes, length: int | None) -> InferRequest:
    """An OIP request whose body may carry binary tensors after ``length`` bytes of JSON."""
    head, rest = split(body, length)
    if length is None:
        return decode_request_doc(decode_json(head))
    reader = _Reader(rest)
    request = decode_request_doc(decode_json(head), reader)
    if reader.offset != len(rest):
        raise ProtocolError(
            f"{len(rest) - reader.offset} bytes follow the last binary input; the inputs' "
            "binary_data_size must add up to the body's binary part"
        )
    return request


class _Reader:
    """Hands each binary input its bytes, in input order (``protocol.BinaryReader``)."""

    def __init__(self, rest: memoryview) -> None:
        self.rest, self.offset = rest, 0

    def __call__(
        self, path: str, datatype: str, shape: tuple[int, ...], parameters: Any
    ) -> np.ndarray[Any, Any] | None:
        size = binary_size(path, parameters)
        if size is None:
            return None
        if self.offset + size > len(self.rest):
            raise ProtocolError(
                f"{path}.parameters.binary_data_size is {size} but only {len(self.rest) - self.offset} "
                "binary bytes are left in the body"
            )
        array = tensor_from_bytes(path, datatype, shape, self.rest[self.offset : self.offset + size])
        self.offset += size
        return array


def encode_infer_response(
    model_name: str,
    model_version: str,
    outputs: Sequence[InferOutput],
    request: InferRequest,
    request_id: str | None,
) -> tuple[bytes, int]:
    """The answer with the outputs ``request`` wants in binary as raw parts: (body, JSON length)."""
    docs, blobs = output_docs(outputs, [request.wants_binary(o.name) for o in outputs])
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = docs
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    return b"".join([head, *blobs]), len(head)


def binary_size(path: str, parameters: Any) -> int | None:
    """An input's ``binary_data_size`` parameter, checked; None when its data is in the JSON."""
    if not isinstance(parameters, dict) or "binary_data_size" not in parameters:
        return None
    size = parameters["binary_data_size"]
    if type(size) is not int or size < 0:
        raise ProtocolError(f"{path}.parameters.binary_data_size must be a non-negative integer")
    return size


def tensor_from_bytes(
    path: str, datatype: str, shape: Sequence[int], raw: memoryview
) -> np.ndarray[Any, Any]:
    """One input's raw bytes as an array of its datatype and shape."""
    count = math.prod(shape)
    if datatype == "BYTES":
        return _strings(path, count, raw).reshape(tuple(shape))
    dtype = DATATYPES[datatype].newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise ProtocolError(
            f"{path}: shape {list(shape)} of {datatype} needs {count * dtype.itemsize} bytes but "
            f"binary_data_size is {len(raw)}; make them match"
        )
    if datatype == "BOOL":
        flat = np.frombuffer(raw, dtype=np.uint8)
        if flat.size and flat.max() > 1:
            raise ProtocolError(f"{path}: BOOL bytes must be 0 or 1")
        return flat.astype(np.bool_).reshape(tuple(shape))
    array = np.frombuffer(raw, dtype=dtype).astype(DATATYPES[datatype], copy=True)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ProtocolError(f"{path}.data holds a non-finite value (NaN or Infinity); send finite numbers")
    return array.reshape(tuple(shape))


def _strings(path: str, count: int, raw: memoryview) -> np.ndarray[Any, Any]:
    out = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(raw):
            raise ProtocolError(f"{path}: the binary BYTES data ends before element {i} of {count}")
        (size,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise ProtocolError(f"{path}: BYTES element {i} claims {size} bytes past the data's end")
        try:
            out[i] = str(raw[offset : offset + size], "utf-8")
        except UnicodeDecodeError as err:
            raise ProtocolError(
                f"{path}: BYTES element {i} is not UTF-8 text ({err.reason}); this server's BYTES are text"
            ) from err
        offset += size
    if offset != len(raw):
        raise ProtocolError(f"{path}: {len(raw) - offset} bytes left after the {count} BYTES elements")
    return out


def tensor_to_bytes(array: np.ndarray[Any, Any]) -> bytes:
    """An output's raw bytes, as ``tensor_from_bytes`` reads them."""
    if array.dtype.kind in "OUS":
        parts = []
        for value in array.ravel().tolist():
            data = value if isinstance(value, bytes) else str(value).encode()
            parts.append(_LENGTH.pack(len(data)))
            parts.append(data)
        return b"".join(parts)
    if array.dtype.kind == "b":
        return np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def output_docs(
    outputs: Sequence[InferOutput], binary: Sequence[bool]
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The response's ``outputs`` entries and the raw parts that follow the JSON, in order."""
    docs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for out, raw in zip(outputs, binary, strict=True):
        doc = output_header(out)
        if raw:
            blob = tensor_to_bytes(out.data)
            doc["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            doc["data"] = json_data(out.data)
        docs.append(doc)
    return docs, blobs


def inline(doc: dict[str, Any], rest: memoryview) -> dict[str, Any]:
    """A binary answer's JSON with each binary output's data read back in: how the mirror
    compares a shadow's binary answer with its own (``agreement.read_answer``)."""
    outputs = doc.get("outputs")
    if not isinstance(outputs, list):
        return doc
    offset = 0
    for i, out in enumerate(outputs):
        if not isinstance(out, dict):
            continue
        size = binary_size(f"outputs[{i}]", out.get("parameters"))
        if size is None:
            continue
        if offset + size > len(rest):
            raise ProtocolError(f"outputs[{i}]: binary_data_size {size} runs past the answer's end")
        datatype, shape = out.get("datatype"), out.get("shape")
        if datatype not in DATATYPES or not isinstance(shape, list):
            raise ProtocolError(f"outputs[{i}] has no valid datatype and shape")
        array = tensor_from_bytes(f"outputs[{i}]", datatype, shape, rest[offset : offset + size])
        out["data"] = array.ravel().tolist()
        offset += size
    return doc
