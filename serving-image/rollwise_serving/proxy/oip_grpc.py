"""The OIP's gRPC service through the proxy (``--grpc-port`` in front of ``--grpc-upstream``).

Every unary call of ``inference.GRPCInferenceService`` (and of any other service) is passed on
as bytes, undecoded, to the upstream with its metadata, and its answer or error comes back as
the upstream gave it, so Triton's and KServe's gRPC clients work unchanged. ``ModelInfer`` is
counted and observed like REST's ``/infer``: a copy of the request is decoded by the bundled
server's own reader (``grpc_service.decode_request``, typed or raw tensors) for the features, and
the answer's outputs, read by the same reader, give the class shares (``oip_rest.OipRest.answer``
reads them from their JSON form). Streaming methods (``ModelStreamInfer``) are not proxied.

Outcomes by the upstream's status code: ``OK`` success; ``INVALID_ARGUMENT``, ``OUT_OF_RANGE``,
``RESOURCE_EXHAUSTED`` and ``CANCELLED`` client errors; ``NOT_FOUND`` (another model) not
counted; any other code, and an upstream that does not answer, server errors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import grpc
import orjson
from rollwise_contract.metrics import Outcome

from rollwise_serving.grpc_service import decode_request
from rollwise_serving.metrics import ServerMetrics
from rollwise_serving.oip import grpc_predict_v2_pb2 as pb
from rollwise_serving.protocol import ProtocolError, json_data
from rollwise_serving.proxy.observe import Observer, Seen
from rollwise_serving.proxy.oip_rest import OipRest

log = logging.getLogger("rollwise_serving.proxy.grpc")
INFER: Final = "/inference.GRPCInferenceService/ModelInfer"
CLIENT_CODES: Final = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    }
)
_PASSED_METADATA: Final = ("user-agent", ":authority")
"""Metadata of the proxy's own hop, never passed on (gRPC sets it again)."""


def outcome_of(code: grpc.StatusCode) -> Outcome | None:
    if code is grpc.StatusCode.OK:
        return Outcome.SUCCESS
    if code is grpc.StatusCode.NOT_FOUND:
        return None
    return Outcome.CLIENT_ERROR if code in CLIENT_CODES else Outcome.SERVER_ERROR


def request_features(observer: Observer, message: pb.ModelInferRequest) -> Seen:
    """The features of a ModelInfer request's one input (as REST's ``/infer`` reads them)."""
    if observer.schema is None:
        return Seen()
    try:
        request = decode_request(message)
    except ProtocolError:
        return Seen()
    if len(request.inputs) != 1:
        return Seen()
    array = request.inputs[0].data
    if array.dtype.kind in "OUS":
        return Seen(codes=observer.strings(request.inputs[0].name, array))
    if array.dtype.kind in "biuf":
        return Seen(codes=observer.features(request.inputs[0].name, array))
    return Seen()


def answer_json(raw: bytes) -> bytes | None:
    """A ModelInferResponse's outputs as REST's JSON answer, read by the request reader (an output
    tensor has an input's fields), or None when it cannot be read."""
    try:
        response = pb.ModelInferResponse.FromString(raw)
        as_request = pb.ModelInferRequest(
            inputs=[
                pb.ModelInferRequest.InferInputTensor(
                    name=o.name, datatype=o.datatype, shape=o.shape, contents=o.contents
                )
                for o in response.outputs
            ],
            raw_input_contents=response.raw_output_contents,
        )
        outputs = decode_request(as_request).inputs
    except (ProtocolError, ValueError):
        return None
    doc = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "id": response.id,
        "outputs": [
            {"name": t.name, "datatype": t.datatype, "shape": list(t.shape), "data": json_data(t.data)}
            for t in outputs
        ],
    }
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def _infer_request(raw: bytes) -> pb.ModelInferRequest | None:
    try:
        return pb.ModelInferRequest.FromString(raw)
    except ValueError:  # protobuf's DecodeError; the upstream will say so
        return None


Behavior = Callable[[bytes, grpc.aio.ServicerContext[bytes, bytes]], Awaitable[bytes]]


class _Passthrough(grpc.GenericRpcHandler):
    """Every unary method, as bytes, to the upstream."""

    def __init__(self, proxy: GrpcProxy) -> None:
        self.proxy = proxy

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        method: str = handler_call_details.method
        return grpc.unary_unary_rpc_method_handler(self.proxy.behavior(method))


class GrpcProxy:
    """The gRPC half of the proxy: a server on ``address``, a channel to ``upstream``."""

    def __init__(
        self,
        *,
        address: str,
        name: str,
        upstream: str,
        metrics: ServerMetrics,
        observer: Observer,
        timeout: float,
        max_message_bytes: int,
    ) -> None:
        self.address, self.upstream, self.name = address, upstream, name
        self.metrics, self.observer = metrics, observer
        self.timeout, self.max_message_bytes = timeout, max_message_bytes
        self.answers = OipRest(observer, name)
        self._server: grpc.aio.Server | None = None
        self._channel: grpc.aio.Channel | None = None

    async def start(self) -> None:
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
        ]
        self._channel = grpc.aio.insecure_channel(self.upstream, options=options)
        server = grpc.aio.server(options=options)
        server.add_generic_rpc_handlers([_Passthrough(self)])
        server.add_insecure_port(self.address)
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(5)
        if self._channel is not None:
            await self._channel.close()

    def behavior(self, method: str) -> Behavior:
        async def call(raw: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            return await self._call(method, raw, context)

        return call

    async def _call(self, method: str, raw: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        assert self._channel is not None
        metadata = [(k, v) for k, v in context.invocation_metadata() or () if k not in _PASSED_METADATA]
        stub: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(method)
        message = _infer_request(raw) if method == INFER else None
        if message is None or message.model_name != self.name:
            return await self._pass(stub, raw, metadata, context)  # not this model's inference
        start = time.perf_counter()
        m = self.metrics
        m.inflight.inc()
        outcome: Outcome | None = Outcome.SERVER_ERROR
        try:
            seen = request_features(self.observer, message)
            answer = await self._pass(stub, raw, metadata, context)
            outcome = Outcome.SUCCESS
            body = answer_json(answer)
            if body is not None:
                try:
                    self.answers.answer(seen, 200, body, {})
                except Exception:  # reading a copy must never fail the call
                    log.exception("observing a ModelInfer answer failed")
            return answer
        except _UpstreamStatusError as err:
            outcome = outcome_of(err.code)
            raise err.abort from None
        finally:
            m.inflight.dec()
            if outcome is not None:
                m.requests[outcome].inc()
                m.request_duration.observe(time.perf_counter() - start)

    async def _pass(
        self,
        stub: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes],
        raw: bytes,
        metadata: list[tuple[str, Any]],
        context: grpc.aio.ServicerContext[bytes, bytes],
    ) -> bytes:
        try:
            answer: bytes = await stub(raw, metadata=metadata, timeout=self.timeout)
        except grpc.aio.AioRpcError as err:
            code = err.code()
            try:
                await context.abort(code, err.details() or "")
            except BaseException as abort:  # abort raises to end the call
                raise _UpstreamStatusError(code, abort) from None
            raise
        return answer


class _UpstreamStatusError(Exception):
    def __init__(self, code: grpc.StatusCode, abort: BaseException) -> None:
        super().__init__(code.name)
        self.code, self.abort = code, abort
