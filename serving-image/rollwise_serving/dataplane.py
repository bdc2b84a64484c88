"""Decode -> validate -> (cache) -> predict -> encode. Knows no transport.

A request is validated against the model (``Runtime.prepare``) and the feature schema here,
*before* it joins a micro-batch, so a bad request is refused on its own; ``batching`` coalesces
the rest into shared predict calls and falls back when the primary fails or is late.

Segments (#15): the rows the schema checked get their segment codes here
(``SchemaChecker.segments``), and are counted by outcome once the model answered or failed;
the codes go on with the answer to the feedback store and the mirror.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import orjson
from rollwise_contract.metrics import Outcome

from rollwise_serving import binary
from rollwise_serving.batching import Batcher
from rollwise_serving.cache import PredictionCache, pack_entry, unpack_entry
from rollwise_serving.config import Settings
from rollwise_serving.errors import InputError
from rollwise_serving.features import FeatureValidationError, SchemaChecker
from rollwise_serving.feedback import Feedback, is_keepable, new_id
from rollwise_serving.metrics import ServerMetrics
from rollwise_serving.protocol import (
    InferInput,
    InferOutput,
    InferRequest,
    ProtocolError,
    decode_json,
    encode_infer_response,
    encode_outputs,
    outputs_from_json,
)
from rollwise_serving.repository import Repository
from rollwise_serving.runtimes import Array, Prediction, Runtime

Codes = np.ndarray[Any, np.dtype[np.uint8]] | None
"""A checked request's segment codes, ``[N, S]`` uint8 (``SegmentCoder``), or None."""


class Answered(NamedTuple):
    body: bytes
    outcome: Outcome
    prediction_id: str | None
    """The id kept for feedback (None: not kept)."""
    segments: Codes = None
    header_length: int | None = None
    """Binary extension: the JSON part's length (``Inference-Header-Content-Length``); None: all JSON."""


class Outputs:
    """A prediction's outputs as tensors or as their JSON, each made at most once and only when
    asked for: a JSON client never pays for raw bytes, a cached answer (kept as JSON) is decoded
    only for a binary or gRPC client."""

    __slots__ = ("_json", "_tensors")

    def __init__(self, tensors: list[InferOutput] | None = None, json: bytes | None = None) -> None:
        self._tensors, self._json = tensors, json

    def json(self) -> bytes:
        if self._json is None:
            self._json = encode_outputs(self._tensors or [])
        return self._json

    def tensors(self) -> list[InferOutput]:
        if self._tensors is None:
            self._tensors = outputs_from_json(self._json or b"[]")
        return self._tensors


class Inferred(NamedTuple):
    """An answer before it is encoded for a transport (REST JSON, binary REST, gRPC)."""

    outputs: Outputs
    outcome: Outcome
    answer_id: str
    """The answer's id: the request's, else a new one."""
    kept_id: str | None
    """The id kept for feedback (None: not kept)."""
    segments: Codes = None


class Dataplane:
    def __init__(
        self,
        settings: Settings,
        repository: Repository,
        metrics: ServerMetrics,
        schema: SchemaChecker | None,
        cache: PredictionCache | None,
        *,
        feedback: Feedback | None = None,
    ) -> None:
        self.name = settings.name
        self.version = settings.version
        self.repository = repository
        self.metrics = metrics
        self.schema = schema
        self.cache = cache if cache is not None and cache.enabled else None
        self.feedback = feedback if feedback is not None and feedback.enabled else None
        self.batcher = Batcher(
            repository, metrics, max_rows=settings.max_batch_size, deadline_ms=settings.deadline_ms
        )

    async def infer(self, body: bytes, *, header_length: int | None = None, keep: bool = True) -> Answered:
        """An OIP infer request body -> (response body, outcome, the id kept for feedback, the
        rows' segment codes, the JSON part's length when the answer carries binary tensors).

        ``header_length`` is the request's ``Inference-Header-Content-Length`` (binary inputs
        follow that many bytes of JSON); outputs asked for in binary come back as raw bytes."""
        request = binary.decode_infer_request(body, header_length)
        done = await self.infer_request(request, keep=keep)
        if request.any_binary:
            body_out, length = binary.encode_infer_response(
                self.name, self.version, done.outputs.tensors(), request, done.answer_id
            )
            return Answered(body_out, done.outcome, done.kept_id, done.segments, length)
        body_out = encode_infer_response(self.name, self.version, done.outputs.json(), done.answer_id)
        return Answered(body_out, done.outcome, done.kept_id, done.segments)

    async def infer_request(self, request: InferRequest, *, keep: bool = True) -> Inferred:
        """A decoded OIP request -> its outputs, whatever the transport.

        The answer's id is the request's, else a new one; it is kept for feedback when ``keep``
        and it fits in a header (``feedback.is_keepable``)."""
        runtime = self.repository.runtime()
        prepared = runtime.prepare(request.inputs)
        selected = _select_outputs(runtime, request.outputs)
        codes = self._check_schema(runtime, prepared)
        prediction_id = request.id if request.id is not None else new_id()
        kept_id = prediction_id if keep and is_keepable(prediction_id) else None
        outputs, outcome = await self._predict(
            runtime, prepared, request.inputs, selected, kept_id=kept_id, codes=codes
        )
        return Inferred(outputs, outcome, prediction_id, kept_id, codes)

    async def predict_instances(self, body: bytes, *, keep: bool = True) -> Answered:
        """Named features ``{"id"?: ..., "instances": [{feature: value}, ...]}`` -> predictions,
        with an id as ``infer`` gives one."""
        if self.schema is None:
            raise InputError(
                "this model has no feature schema; use the /infer route or start with --feature-schema"
            )
        doc = decode_json(body)
        if not isinstance(doc, dict) or "instances" not in doc:
            raise ProtocolError('request body must be {"instances": [{"feature": value, ...}, ...]}')
        prediction_id = doc.get("id", None)
        if prediction_id is not None and not isinstance(prediction_id, str):
            raise ProtocolError('"id" must be a string')
        prediction_id = prediction_id if prediction_id is not None else new_id()
        kept_id = prediction_id if keep and is_keepable(prediction_id) else None
        runtime = self.repository.runtime()
        try:
            matrix = self.schema.matrix_from_instances(doc["instances"])
        except FeatureValidationError as err:
            self.metrics.count_problems((p.feature, p.problem.value) for p in err.problems)
            raise
        spec = runtime.inputs[0] if runtime.inputs else None
        tensor = InferInput(spec.name if spec else "input-0", "FP64", matrix.shape, matrix)
        prepared = runtime.prepare([tensor])
        self.metrics.observe_features(matrix)
        codes = self.schema.segments.codes(matrix) if self.schema.segments is not None else None
        prediction, fallback = await self._submit(prepared, [tensor], codes)
        self._keep(kept_id, prediction, codes)
        main = prediction.labels if prediction.labels is not None else prediction.scores
        doc_out = {
            "model_name": self.name,
            "model_version": self.version,
            "id": prediction_id,
            "predictions": _jsonable(main) if main is not None else None,
            "outputs": {k: _jsonable(v) for k, v in prediction.outputs.items()},
        }
        return Answered(
            orjson.dumps(doc_out), Outcome.FALLBACK if fallback else Outcome.SUCCESS, kept_id, codes
        )

    def prepared(self, request: InferRequest) -> tuple[Runtime, dict[str, Array]]:
        """A request checked as ``/infer`` checks it (the model's inputs, the feature schema) but
        not counted: what ``explain`` attributes, which must not move drift or segment counts."""
        runtime = self.repository.runtime()
        prepared = runtime.prepare(request.inputs)
        if self.schema is not None and len(prepared) == 1:
            name, tensor = next(iter(prepared.items()))
            if tensor.dtype.kind in "biuf":
                self.schema.check_matrix(name, tensor)
        return runtime, prepared

    def _check_schema(self, runtime: Runtime, prepared: dict[str, Array]) -> Codes:
        """The feature schema, on the tensor the model receives. Strings reach only models that
        take strings; they are read as the declared features and checked like the same numbers,
        so text (`"nan"`, `"a"`, `"99"`) never slips past the schema into the model. Returns the
        checked rows' segment codes (None without segments or without a check)."""
        if self.schema is None or len(prepared) != 1:
            return None
        name, tensor = next(iter(prepared.items()))
        try:
            if tensor.dtype.kind in "OUS":
                matrix = self.schema.matrix_from_strings(name, tensor)
            elif tensor.dtype.kind in "biuf":
                matrix = tensor
            else:
                return None
            self.schema.check_matrix(name, matrix)
        except FeatureValidationError as err:
            self.metrics.count_problems((p.feature, p.problem.value) for p in err.problems)
            raise
        self.metrics.observe_features(matrix)
        return self.schema.segments.codes(matrix) if self.schema.segments is not None else None

    async def _submit(
        self, prepared: dict[str, Array], raw: Sequence[InferInput], codes: Codes
    ) -> tuple[Prediction, bool]:
        """Predict (batched, with fallback), counting the rows per segment by outcome: anything
        raised here is the server's failure (``PredictError``, ``DeadlineError``: 5xx in ``app``)."""
        try:
            prediction, fallback = await self.batcher.submit(prepared, raw)
        except Exception:
            self.metrics.observe_segment_rows(codes, Outcome.SERVER_ERROR)
            raise
        self.metrics.observe_predictions(prediction.labels, prediction.scores)
        self.metrics.observe_segment_rows(codes, Outcome.FALLBACK if fallback else Outcome.SUCCESS)
        self.metrics.observe_segment_predictions(codes, prediction.labels)
        return prediction, fallback

    async def _predict(
        self,
        runtime: Runtime,
        prepared: dict[str, Array],
        raw: Sequence[InferInput],
        selected: Sequence[str] | None,
        *,
        kept_id: str | None = None,
        codes: Codes = None,
    ) -> tuple[Outputs, Outcome]:
        key = None
        if self.cache is not None and self.repository.primary.runtime is not None:
            key = self.cache.key(self.repository.primary_digest(), prepared, selected)
            value = await self.cache.get(key)
            cached = unpack_entry(value) if value is not None else None
            if cached is not None:
                self.metrics.observe_predictions(cached.labels, cached.scores)
                self.metrics.observe_segment_rows(codes, Outcome.SUCCESS)
                self.metrics.observe_segment_predictions(codes, cached.labels)
                if self.feedback is not None and kept_id is not None:
                    self.feedback.record(kept_id, cached.labels, cached.scores, None, codes)
                return Outputs(json=cached.outputs), Outcome.SUCCESS
        prediction, fallback = await self._submit(prepared, raw, codes)
        self._keep(kept_id, prediction, codes)
        names = selected if selected is not None else list(prediction.outputs)
        outputs = Outputs([InferOutput(n, prediction.outputs[n]) for n in names if n in prediction.outputs])
        if key is not None and self.cache is not None and not fallback:
            self.cache.put(key, pack_entry(prediction.labels, prediction.scores, outputs.json()))
        return outputs, Outcome.FALLBACK if fallback else Outcome.SUCCESS

    def _keep(self, kept_id: str | None, prediction: Prediction, codes: Codes = None) -> None:
        """Keep what was answered for a label to be joined later (``feedback``)."""
        if self.feedback is None or kept_id is None:
            return
        probabilities = prediction.outputs.get("probabilities")
        if probabilities is not None and probabilities.ndim != 2:
            probabilities = None
        self.feedback.record(kept_id, prediction.labels, prediction.scores, probabilities, codes)

    def model_metadata(self) -> dict[str, Any]:
        runtime = self.repository.runtime()
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": runtime.format.value,
            "inputs": [s.as_json() for s in runtime.inputs],
            "outputs": [s.as_json() for s in runtime.outputs],
        }


def _select_outputs(runtime: Runtime, wanted: Sequence[str] | None) -> Sequence[str] | None:
    if wanted is None or not runtime.outputs:
        return wanted
    known = {o.name for o in runtime.outputs}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise InputError(f"unknown output(s) {unknown}; this model has {sorted(known)}")
    return wanted


def _jsonable(array: Array) -> Any:
    return array.tolist()
