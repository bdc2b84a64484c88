"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` on ``--grpc-port``.

A second transport in front of the same dataplane as REST: a ``ModelInferRequest`` becomes the
``protocol.InferRequest`` REST's JSON becomes, checked the same way (datatype, shape, element
count, range, finite floats, UTF-8 text) with messages naming the input as REST's do, then
``Dataplane.infer_request`` predicts, caches, checks the schema and keeps the answer for feedback.
Errors take their status from the app's one table (``app.ERRORS``, passed in): its HTTP status
names the gRPC code (``CODES``), its outcome is counted in ``rollwise_requests_total`` as REST's
are, with the same latency histogram and in-flight gauge.

Tensors come typed (``contents``) or raw (``raw_input_contents``, one entry per input, the layout
of the REST binary extension, ``binary``). The answer follows the request: raw outputs to a raw
request, typed ``contents`` to a typed one, except that an FP16 output (which has no typed field)
makes the whole answer raw. The answer's ``id`` is the request's, else a new one; when it is kept
for ``POST /v2/models/{name}/feedback`` it also comes back as the ``x-rollwise-prediction-id``
initial metadata, as REST's header.

What gRPC does not do (REST does): requests are neither mirrored to ``--mirror-url`` nor
forwarded to ``--forward-url`` (an A/B match or user hash is served here); the feature-name
``/predict`` route and the shadow ``/diff`` have no gRPC twin. Messages over ``--max-body-bytes``
are refused by gRPC itself (``RESOURCE_EXHAUSTED``) before they are read, so they are not counted.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, NoReturn

import grpc
import numpy as np
from rollwise_contract.metrics import Outcome

from rollwise_serving import binary
from rollwise_serving.config import Settings
from rollwise_serving.dataplane import Dataplane
from rollwise_serving.errors import ModelNotFoundError
from rollwise_serving.feedback import ID_HEADER
from rollwise_serving.metrics import ServerMetrics
from rollwise_serving.oip import grpc_predict_v2_pb2 as pb
from rollwise_serving.oip import grpc_predict_v2_pb2_grpc as pb_grpc
from rollwise_serving.protocol import (
    DATATYPES,
    InferInput,
    InferOutput,
    InferRequest,
    ProtocolError,
    check_shape,
    datatype_of,
    refuse_classification,
)
from rollwise_serving.repository import Repository

log = logging.getLogger("rollwise_serving.grpc")

Errors = Mapping[type[Exception], tuple[int, Outcome]]

CODES: Final[dict[int, grpc.StatusCode]] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    408: grpc.StatusCode.CANCELLED,
    429: grpc.StatusCode.UNAVAILABLE,  # busy: retry, as gRPC maps HTTP 429
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
    500: grpc.StatusCode.INTERNAL,
}
"""The HTTP status ``app.ERRORS`` gives an exception -> the gRPC code it gets here (the usual
HTTP <-> gRPC correspondence). 408, a request the client stopped sending, is CANCELLED."""

TYPED: Final[dict[str, str]] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""Each datatype's field in ``InferTensorContents`` (the spec's table); FP16 has none."""
_FIELDS: Final = tuple(dict.fromkeys(TYPED.values()))


# ---- ModelInferRequest -> InferRequest ----------------------------------------------------------


def decode_request(request: pb.ModelInferRequest) -> InferRequest:
    """A gRPC infer request as the dataplane's ``InferRequest``; ProtocolError names what is wrong."""
    if not request.inputs:
        raise ProtocolError("inputs must be a non-empty list of tensors (name, datatype, shape, contents)")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(
            f"raw_input_contents has {len(raw)} entries but the request has {len(request.inputs)} inputs; "
            "send one entry per input, in input order, or none"
        )
    inputs = tuple(
        _decode_input(i, tensor, raw[i] if raw else None) for i, tensor in enumerate(request.inputs)
    )
    names = [t.name for t in inputs]
    if len(set(names)) != len(names):
        raise ProtocolError(f"inputs names must be unique; got {names}")
    outputs: tuple[str, ...] | None = None
    if request.outputs:
        for i, out in enumerate(request.outputs):
            refuse_classification(f"outputs[{i}] ({out.name!r}).parameters", parameters_of(out.parameters))
        outputs = tuple(o.name for o in request.outputs)
    return InferRequest(
        inputs=inputs,
        id=request.id or None,
        outputs=outputs,
        parameters=parameters_of(request.parameters) or None,
    )


def parameters_of(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    """A parameters map as plain values: accepted and ignored, as REST's are."""
    out: dict[str, Any] = {}
    for key, value in parameters.items():
        choice = value.WhichOneof("parameter_choice")
        out[key] = getattr(value, choice) if choice is not None else None
    return out


def _decode_input(index: int, tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None) -> InferInput:
    path = f"inputs[{index}]"
    if not tensor.name:
        raise ProtocolError(f"{path}.name must be a non-empty string")
    path = f"inputs[{index}] ({tensor.name!r})"
    datatype = tensor.datatype
    if datatype not in DATATYPES:
        raise ProtocolError(f"{path}.datatype: {datatype!r} is not valid; use one of {', '.join(DATATYPES)}")
    shape = tuple(check_shape(path, list(tensor.shape)))
    given = [f for f in _FIELDS if len(getattr(tensor.contents, f))]
    if raw is not None:
        if given:
            raise ProtocolError(f"{path} has both contents and raw_input_contents; send one of them")
        array = _from_raw(path, index, datatype, shape, raw)
    else:
        array = _from_contents(path, datatype, shape, tensor.contents, given)
    return InferInput(tensor.name, datatype, shape, array, parameters_of(tensor.parameters) or None)


def _from_raw(
    path: str, index: int, datatype: str, shape: tuple[int, ...], raw: bytes
) -> np.ndarray[Any, Any]:
    if datatype != "BYTES":
        needed = math.prod(shape) * DATATYPES[datatype].itemsize
        if len(raw) != needed:
            raise ProtocolError(
                f"{path}: shape {list(shape)} of {datatype} needs {needed} bytes but "
                f"raw_input_contents[{index}] has {len(raw)}; make them match"
            )
    return binary.tensor_from_bytes(path, datatype, shape, memoryview(raw))


def _from_contents(
    path: str, datatype: str, shape: tuple[int, ...], contents: pb.InferTensorContents, given: list[str]
) -> np.ndarray[Any, Any]:
    field = TYPED.get(datatype)
    if field is None:
        raise ProtocolError(f"{path}: {datatype} has no typed contents field; send it in raw_input_contents")
    wrong = [f for f in given if f != field]
    if wrong:
        raise ProtocolError(
            f"{path}.contents: {datatype} data goes in {field}, not {', '.join(wrong)}; send it there"
        )
    values = getattr(contents, field)
    expected = math.prod(shape)
    if len(values) != expected:
        raise ProtocolError(
            f"{path}: shape {list(shape)} needs {expected} elements but contents.{field} has "
            f"{len(values)}; make data match the shape"
        )
    if datatype == "BYTES":
        array = np.empty(expected, dtype=object)
        for i, value in enumerate(values):
            try:
                array[i] = value.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ProtocolError(
                    f"{path}: BYTES element {i} is not UTF-8 text ({err.reason}); "
                    "this server's BYTES are text"
                ) from err
        return array.reshape(shape)
    dtype = DATATYPES[datatype]
    wide: np.ndarray[Any, Any] = np.array(
        values, dtype=np.float64 if dtype.kind == "f" else _WIDE[dtype.kind]
    )
    if dtype.kind in "iu" and wide.size:
        info = np.iinfo(dtype)
        if wide.min() < info.min or wide.max() > info.max:
            raise ProtocolError(f"{path}.contents.{field} holds a value out of the {datatype} range")
    if dtype.kind == "f" and not np.isfinite(wide).all():
        raise ProtocolError(
            f"{path}.contents.{field} holds a non-finite value (NaN or Infinity); send finite numbers"
        )
    return wide.astype(dtype).reshape(shape)


_WIDE: Final = {"b": np.bool_, "i": np.int64, "u": np.uint64}


# ---- outputs -> ModelInferResponse --------------------------------------------------------------


def encode_response(
    name: str, version: str, answer_id: str, outputs: Sequence[InferOutput], *, raw: bool
) -> pb.ModelInferResponse:
    """The answer with its outputs raw (``raw_output_contents``) or typed (``contents``)."""
    response = pb.ModelInferResponse(model_name=name, model_version=version, id=answer_id)
    datatypes = [datatype_of(o.data) for o in outputs]
    raw = raw or any(d not in TYPED for d in datatypes)
    for out, datatype in zip(outputs, datatypes, strict=True):
        tensor = response.outputs.add(name=out.name, datatype=datatype, shape=list(out.data.shape))
        if raw:
            response.raw_output_contents.append(binary.tensor_to_bytes(out.data))
            continue
        flat = out.data.ravel()
        if datatype == "BYTES":
            values: list[Any] = [v if isinstance(v, bytes) else str(v).encode() for v in flat.tolist()]
        else:
            values = flat.tolist()
        getattr(tensor.contents, TYPED[datatype]).extend(values)
    return response


# ---- the service ---------------------------------------------------------------------------------


class InferenceService:
    """``GRPCInferenceService``'s methods, over the app's dataplane, repository and metrics."""

    def __init__(
        self,
        settings: Settings,
        *,
        dataplane: Dataplane,
        repository: Repository,
        metrics: ServerMetrics,
        errors: Errors,
        server_metadata: Callable[[], dict[str, Any]],
    ) -> None:
        self.settings, self.dataplane, self.repository = settings, dataplane, repository
        self.metrics, self.errors, self.server_metadata = metrics, errors, server_metadata

    async def ServerLive(  # noqa: N802 - the protocol's method names
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(  # noqa: N802
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=bool(self.repository.readiness()["ready"]))

    async def ModelReady(  # noqa: N802
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelReadyResponse:
        try:
            self._check_model(request.name, request.version)
        except ModelNotFoundError as err:
            await self._abort(context, err)
        return pb.ModelReadyResponse(ready=bool(self.repository.readiness()["ready"]))

    async def ServerMetadata(  # noqa: N802
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerMetadataResponse:
        doc = self.server_metadata()
        return pb.ServerMetadataResponse(
            name=doc["name"], version=doc["version"], extensions=doc["extensions"]
        )

    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelMetadataResponse:
        try:
            self._check_model(request.name, request.version)
            doc = self.dataplane.model_metadata()
        except Exception as err:
            await self._abort(context, err)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=doc["name"],
            versions=doc["versions"],
            platform=doc["platform"],
            inputs=[tensor(**t) for t in doc["inputs"]],
            outputs=[tensor(**t) for t in doc["outputs"]],
        )

    async def ModelInfer(  # noqa: N802
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelInferResponse:
        """Counted as REST's infer route is: by outcome, with its latency and while in flight; a
        call naming another model is refused first and not counted (REST's router does the same)."""
        try:
            self._check_model(request.model_name, request.model_version)
        except ModelNotFoundError as err:
            await self._abort(context, err)
        start = time.perf_counter()
        metrics = self.metrics
        metrics.inflight.inc()
        outcome = Outcome.SERVER_ERROR
        try:
            done = await self.dataplane.infer_request(decode_request(request))
            outcome = done.outcome
            response = encode_response(
                self.settings.name,
                self.settings.version,
                done.answer_id,
                done.outputs.tensors(),
                raw=bool(request.raw_input_contents),
            )
            if done.kept_id is not None:
                await context.send_initial_metadata(((ID_HEADER.decode(), done.kept_id),))
            return response
        except asyncio.CancelledError:
            outcome = Outcome.CLIENT_ERROR  # the client cancelled or its deadline passed: as REST's 408
            raise
        except Exception as err:
            outcome = self.errors.get(type(err), (500, Outcome.SERVER_ERROR))[1]
            await self._abort(context, err)
        finally:
            metrics.inflight.dec()
            metrics.requests[outcome].inc()
            metrics.request_duration.observe(time.perf_counter() - start)

    def _check_model(self, name: str, version: str) -> None:
        """The request names this server's model (and, if any, its version), as REST's URL must."""
        if name != self.settings.name:
            raise ModelNotFoundError(f"no model {name!r}; this server serves {self.settings.name!r}")
        if version and version != self.settings.version:
            raise ModelNotFoundError(
                f"model {name!r} has no version {version!r}; this server serves {self.settings.version!r}"
            )

    async def _abort(self, context: grpc.aio.ServicerContext[Any, Any], err: Exception) -> NoReturn:
        """End the call with the code ``app.ERRORS`` gives ``err`` and its message (as REST's body)."""
        status, _ = self.errors.get(type(err), (500, Outcome.SERVER_ERROR))
        if type(err) not in self.errors:
            log.error("unexpected error in a gRPC call", exc_info=err)
        await context.abort(CODES.get(status, grpc.StatusCode.INTERNAL), str(err))


class GrpcServer:
    """The gRPC server of one process (each ``--workers`` process runs its own, in its own event
    loop, on the same port: gRPC sets ``SO_REUSEPORT`` on Linux and the kernel spreads connections)."""

    def __init__(self, service: InferenceService, host: str, port: int, max_message_bytes: int) -> None:
        self.service, self.address, self.max_message_bytes = service, f"{host}:{port}", max_message_bytes
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.so_reuseport", 1),
            ]
        )
        # protoc's glue is untyped: it registers each method of the proto under its wire path
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(self.service, server)  # type: ignore[no-untyped-call]
        server.add_insecure_port(self.address)  # raises when the port cannot be bound
        await server.start()
        self._server = server
        log.info("serving the Open Inference Protocol over gRPC on %s (pid %d)", self.address, os.getpid())

    async def stop(self, grace_seconds: float = 5) -> None:
        """Stop taking calls and give those in flight ``grace_seconds`` to finish."""
        if self._server is not None:
            await self._server.stop(grace_seconds)
            self._server = None
