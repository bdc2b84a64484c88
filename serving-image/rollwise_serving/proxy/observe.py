"""What every protocol adapter records, through the bundled server's own ``ServerMetrics``: one
request's features (the feature schema's check, drift buckets, segment codes) and its answer's
predictions (class shares or values, per segment).

Values and predictions are observed in batches (``flush``: every ``FLUSH_ROWS`` rows, every
``FLUSH_SECONDS`` from the app's timer, and before each ``/metrics``): one histogram update per
bucket for hundreds of rows instead of one per value, which was a fifth of the proxy's CPU per
request in front of MLServer. A scrape always sees every answered request; a request's rows are
counted, and its segment codes read, at once as before.

The proxy never refuses a request for its features, since the user's server is the judge of
its own input: a row the schema refuses is counted in ``rollwise_data_quality_total`` as the
bundled server counts it, its values are not observed (the bundled server never observes a
refused request either), and the request goes on unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from rollwise_contract.features import OutputKind
from rollwise_contract.metrics import Outcome

from rollwise_serving.features import FeatureValidationError, SchemaChecker
from rollwise_serving.feedback import Feedback, is_keepable
from rollwise_serving.metrics import ServerMetrics

Codes = np.ndarray[Any, np.dtype[np.uint8]] | None
Headers = list[tuple[bytes, bytes]]
FLUSH_ROWS = 512
"""Rows held before they are observed in one pass."""
FLUSH_SECONDS = 0.25
"""The longest rows wait, on the app's timer."""


@dataclass(frozen=True, slots=True)
class Seen:
    """What an adapter read of a request, handed back to it with the answer."""

    codes: Codes = None
    """The rows' segment codes (``SegmentCoder``), when the schema checked them."""
    stream: bool = False
    """The client asked for a streamed answer (openai)."""
    keep: bool = True
    """The answer may be kept for feedback: not a copy mirrored to this (shadow) pod."""
    seconds: float | None = None
    """A whole answer's time, from the request reaching the proxy to its body read (openai, not
    streamed: set by the app once read, for its output tokens per second)."""


class Adapter(Protocol):
    """One protocol: which requests are inference, what to read of them and of their answers."""

    def is_inference(self, method: str, path: str) -> bool: ...
    def request(self, body: bytes, headers: Headers) -> Seen: ...
    def answer(self, seen: Seen, status: int, body: bytes, headers: Any) -> None: ...


class Observer:
    """The metrics and the schema an adapter records into."""

    def __init__(
        self, metrics: ServerMetrics, schema: SchemaChecker | None, feedback: Feedback | None = None
    ) -> None:
        self.metrics = metrics
        self.schema = schema
        self.feedback = feedback if feedback is not None and feedback.enabled else None
        self._features: list[np.ndarray[Any, Any]] = []
        self._labels: list[np.ndarray[Any, Any]] = []
        self._scores: list[np.ndarray[Any, Any]] = []
        self._values: list[np.ndarray[Any, Any]] = []
        self._rows = 0

    def flush(self) -> None:
        """Observe the rows held since the last flush."""
        m = self.metrics
        features, labels, scores, values = self._features, self._labels, self._scores, self._values
        self._features, self._labels, self._scores, self._values, self._rows = [], [], [], [], 0
        if features:
            m.observe_features(np.concatenate(features) if len(features) > 1 else features[0])
        if labels:
            m.observe_predictions(np.concatenate(labels), np.concatenate(scores))
        if values:
            m.observe_predictions(None, np.concatenate(values))

    def _held(self, rows: int) -> None:
        self._rows += rows
        if self._rows >= FLUSH_ROWS:
            self.flush()

    def features(self, name: str, matrix: np.ndarray[Any, Any], *, checked: bool = False) -> Codes:
        """Check a ``[rows, features]`` matrix against the schema and observe it; its segment codes."""
        schema = self.schema
        if schema is None:
            return None
        try:
            if not checked:
                schema.check_matrix(name, matrix)
        except FeatureValidationError as err:
            self.metrics.count_problems((p.feature, p.problem.value) for p in err.problems)
            return None
        if matrix.ndim == 2 and matrix.shape[1] == len(schema.names):
            self._features.append(matrix)
            self._held(len(matrix))
        return schema.segments.codes(matrix) if schema.segments is not None else None

    def strings(self, name: str, tensor: np.ndarray[Any, Any]) -> Codes:
        """A BYTES tensor read as the declared features (``SchemaChecker.matrix_from_strings``)."""
        if self.schema is None:
            return None
        try:
            matrix = self.schema.matrix_from_strings(name, tensor)
        except FeatureValidationError as err:
            self.metrics.count_problems((p.feature, p.problem.value) for p in err.problems)
            return None
        return self.features(name, matrix)

    def predictions(
        self,
        seen: Seen,
        *,
        labels: Sequence[str] | None,
        scores: Sequence[float | None] | None,
        answer_id: str | None = None,
        probabilities: Sequence[Sequence[float]] | None = None,
    ) -> None:
        """One answer's rows: class shares (with the predicted class's probability when known) or
        values. The output kind is fixed by the first answer when no schema or reference declared it."""
        m = self.metrics
        if m.is_classifier is None:
            declared = self.schema.output if self.schema else None
            if declared is not None and declared.kind is OutputKind.CLASSIFIER:
                m.bind_output(declared.classes or [])
            else:
                m.bind_output([] if labels is not None else None)
        label_array = np.asarray(labels, dtype=object) if labels is not None else None
        score_array = (
            np.asarray([np.nan if s is None else s for s in scores], dtype=np.float64) if scores else None
        )
        if m.is_classifier and label_array is not None and score_array is not None:
            score_array = np.where(np.isfinite(score_array), score_array, 1.0)
        if m.is_classifier and label_array is not None:
            self._labels.append(label_array.ravel())
            fits = score_array is not None and score_array.size == label_array.size
            self._scores.append(score_array.ravel() if fits else np.ones(label_array.size))  # type: ignore[union-attr]
            self._held(label_array.size)
        elif m.is_classifier is False and score_array is not None:
            self._values.append(score_array.ravel())
            self._held(score_array.size)
        m.observe_segment_rows(seen.codes, Outcome.SUCCESS)
        m.observe_segment_predictions(seen.codes, label_array)
        if self.feedback is not None and seen.keep and answer_id is not None and is_keepable(answer_id):
            kept_probabilities = np.asarray(probabilities, dtype=np.float64) if probabilities else None
            values = None if label_array is not None else score_array
            self.feedback.record(answer_id, label_array, values, kept_probabilities, seen.codes)
