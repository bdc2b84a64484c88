"""Every metric the server exports, defined here and nowhere else.

These names and labels are the operator's contract; ``docs/metrics.md`` documents each of them
with the default PromQL queries built on them (tested against a real Prometheus). Keep them
stable. Label cardinality is bounded: ``model``/``version``/``track`` are one value per process,
``outcome``/``result``/``problem`` are enums, ``feature`` is a declared feature (or ``""`` for a
problem with the whole input), ``class`` is a declared class (others become ``"other"``),
``peer_version`` one of the first few shadow versions seen (others ``"other"``), ``segment`` a
declared segment feature and ``value`` one of its ``Segment.values()`` (at most 4 x 20).

Hot-path cost is kept to a few attribute look-ups: every label child is bound once at start-up,
and drift (PSI) is computed only when ``/metrics`` is scraped, from the same histogram buckets,
so it stays correct when several worker processes are aggregated by prometheus_client's
multiprocess mode.
"""

from __future__ import annotations

import collections
import math
import os
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from rollwise_contract.features import OutputKind
from rollwise_contract.metrics import (
    ATTRIBUTION_ABS,
    CACHE,
    DATA_QUALITY,
    EXPLAINED_ROWS,
    FALLBACK,
    FEATURE_PSI,
    FEATURE_REFERENCE,
    FEATURE_VALUE,
    FEEDBACK,
    FORWARD,
    INFLIGHT,
    LABEL_ABS_ERROR,
    LABEL_CORRECT,
    LABEL_LOG_LOSS,
    LABEL_LOG_LOSS_SQUARED,
    LABEL_SQUARED_ERROR,
    LABEL_WITH_PROBABILITIES,
    LABELLED,
    LABELS,
    LLM_FINISH,
    LLM_INTER_TOKEN_LATENCY,
    LLM_OUTPUT_TOKENS_PER_SECOND,
    LLM_TIME_PER_OUTPUT_TOKEN,
    LLM_TIME_TO_FIRST_TOKEN,
    LLM_TOKENS,
    MAX_EXPLAINED_FEATURES,
    MAX_PEER_VERSIONS,
    MIRROR,
    MODEL_LOADED,
    PEER_VERSION,
    PREDICTION_PSI,
    PREDICTION_REFERENCE,
    PREDICTION_VALUE,
    REQUEST_DURATION,
    REQUESTS,
    SEGMENT,
    SEGMENT_LABEL_ABS_ERROR,
    SEGMENT_LABEL_CORRECT,
    SEGMENT_LABEL_SQUARED_ERROR,
    SEGMENT_LABELLED,
    SEGMENT_PREDICTIONS,
    SEGMENT_ROWS,
    SEGMENT_SHADOW_AGREED,
    SEGMENT_SHADOW_COMPARED,
    SEGMENT_VALUE,
    SHADOW_AGREED,
    SHADOW_COMPARED,
    SHADOW_DELTA,
    SHADOW_DELTA_SQUARED,
    SHADOW_UNCOMPARABLE,
    FeedbackResult,
    FinishReason,
    Outcome,
    Problem,
    TokenKind,
    Uncomparable,
)

from rollwise_serving import drift
from rollwise_serving.features import SchemaChecker, SchemaError


def load_signals(
    feature_schema: str | None, reference: str | None
) -> tuple[SchemaChecker | None, drift.Reference | None]:
    """The feature schema and drift reference a server's signals are computed against (either may
    be unset): one loading for the bundled server and the signals proxy."""
    schema = SchemaChecker.load(feature_schema) if feature_schema else None
    return schema, drift.Reference.load(reference) if reference else None


def signal_file_problems(feature_schema: str | None, reference: str | None) -> list[str]:
    """Every problem with those two files, for the start-up check that exits before the port is bound."""
    problems = []
    if feature_schema:
        try:
            SchemaChecker.load(feature_schema)
        except SchemaError as err:
            problems.append(str(err))
    if reference:
        try:
            drift.Reference.load(reference)
        except ValueError as err:
            problems.append(str(err))
    return problems


LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
SCORE_BUCKETS: Final = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
DEFAULT_VALUE_BUCKETS: Final = (-10.0, -1.0, -0.1, 0.0, 0.1, 1.0, 10.0, 100.0, 1000.0)
DELTA_BUCKETS: Final = (
    *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    *(2.5, 5.0, 10.0, 25.0, 100.0, 1000.0),
)
"""|own - shadow|: probabilities' differences fall in 0.001..1; regressors' values may differ by
more, whatever their unit, so the tail goes on to 1000 (fixed, so queries can name a bound)."""
FIRST_TOKEN_BUCKETS: Final = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
"""Time to first token: tens of ms for a small model on a GPU, seconds for a long prompt on a CPU."""
INTER_TOKEN_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Gaps between streamed tokens: a few ms (fast GPU) to a second (a loaded CPU)."""
TIME_PER_OUTPUT_TOKEN_BUCKETS: Final = (
    *(0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1),
    *(0.15, 0.2, 0.3, 0.5, 1.0, 2.5),
)
"""An answer's mean gap between tokens: finer than the per-gap buckets from 5 to 100 ms, since a
mean over a whole answer spreads less than single gaps, and spaced so that a boundary minus 20 ms
(interTokenLatencyP95's default tolerance) is another boundary up to 100 ms."""
OUTPUT_TOKENS_PER_SECOND_BUCKETS: Final = (
    *(1.0, 1.25, 1.6, 2.0, 2.5, 3.2, 4.0, 5.0, 6.3, 8.0, 10.0, 12.5, 16.0, 20.0, 25.0, 32.0),
    *(40.0, 50.0, 63.0, 80.0, 100.0, 125.0, 160.0, 200.0, 250.0, 320.0, 400.0, 500.0),
)
"""An answer's output tokens per second: 1 (a loaded CPU) to 500 (a fast GPU), on the R10
preferred numbers, each about 1.25x the one below, so outputTokensPerSecond's default tolerance (20 %
slower: stable's rate / 0.8 = 1.25x) compares each boundary with the next one up."""
MAX_CLASSES: Final = 50
MAX_QUALITY_VERSIONS: Final = 8
"""(version, track) pairs with their own quality series: labels for predictions of older versions
keep arriving after promotions, but a pod's series stay bounded (later ones: version ``other``)."""
OTHER_CLASS: Final = "other"
SMALL_BATCH: Final = 8
"""Up to this many rows, per-segment counters are bumped row by row (cheaper than numpy's calls)."""
MAX_SEGMENT_PREDICTION_KEYS: Final = 4096

# `*_created` series double the scrape for no use of ours (Prometheus reads counters' resets itself).
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


class ServerMetrics:
    """The bound metric children for one served model; pass this, not the registry, around."""

    def __init__(
        self,
        *,
        model: str,
        version: str,
        track: str,
        schema: SchemaChecker | None = None,
        reference: drift.Reference | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.reference = reference
        self.feature_names = schema.names if schema else ()
        self._labelvalues = (model, version, track)
        self._schema = schema
        self.classes: tuple[str, ...] = ()
        self.is_classifier: bool | None = None
        self.prediction_by_class: dict[str, Any] = {}
        self._prediction_family: Histogram | None = None
        # Registration order is the order of families in /metrics; keep it stable.
        self._bind_requests()
        self._bind_declared_output(schema, reference)
        self._bind_features(schema)
        self._bind_routing_counters()
        self._bind_model_loaded()
        self._bind_shadow()
        self._bind_quality()
        self._bind_segments(schema)
        self._bind_explanations()

    # ---- start-up: one builder per metric family -----------------------------------------------

    def _bind_requests(self) -> None:
        labels = self._labelvalues
        requests = Counter(
            REQUESTS,
            "Inference requests by outcome (success, client_error, server_error, fallback).",
            [*LABELS, "outcome"],
            registry=self.registry,
        )
        self.requests = {o: requests.labels(*labels, o) for o in Outcome}
        self.request_duration = Histogram(
            REQUEST_DURATION,
            "Inference request latency in seconds, from request received to response ready.",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        ).labels(*labels)
        self.inflight = Gauge(
            INFLIGHT,
            "Inference requests being handled now.",
            LABELS,
            registry=self.registry,
            multiprocess_mode="livesum",
        ).labels(*labels)

    def _bind_declared_output(self, schema: SchemaChecker | None, reference: drift.Reference | None) -> None:
        """Bind the prediction histogram now when the schema or reference says what the model outputs."""
        declared = schema.output if schema else None
        if declared is not None and declared.kind is OutputKind.CLASSIFIER:
            self.bind_output(declared.classes or [])
        elif declared is not None or isinstance(reference and reference.prediction, drift.Binned):
            self.bind_output(None)
        elif reference is not None and isinstance(reference.prediction, drift.ClassShares):
            self.bind_output(reference.prediction.classes)

    def _bind_features(self, schema: SchemaChecker | None) -> None:
        labels = self._labelvalues
        feature_hist = _FeatureHistogram(
            FEATURE_VALUE,
            "Input feature values per declared feature; buckets are the reference bins.",
            [*LABELS, "feature"],
            buckets=DEFAULT_VALUE_BUCKETS,
            registry=self.registry,
        )
        self.feature_value: list[Any] = []
        self._feature_cuts_arrays: list[np.ndarray[Any, np.dtype[np.float64]]] = []
        for i, name in enumerate(self.feature_names):
            # Each feature gets its own bins (its reference's), so PSI can be read from buckets.
            cuts = self._feature_cuts(name, schema, i)
            _FeatureHistogram.bounds[name] = cuts
            child = feature_hist.labels(*labels, name)
            self._feature_cuts_arrays.append(np.asarray(cuts, dtype=np.float64))
            self.feature_value.append(child)
        quality = Counter(
            DATA_QUALITY,
            "Input data-quality problems by feature and kind (missing, out_of_range, rejected).",
            [*LABELS, "feature", "problem"],
            registry=self.registry,
        )
        self.data_quality = {
            (f, p.value): quality.labels(*labels, f, p.value)
            for f in (*self.feature_names, "")
            for p in Problem
        }

    def _bind_routing_counters(self) -> None:
        """Where requests went other than the primary: fallback, cache, mirror, forward."""
        labels, reg = self._labelvalues, self.registry
        self.fallback = Counter(
            FALLBACK,
            "Requests answered by the fallback model because the primary failed or missed its deadline.",
            [*LABELS, "reason"],
            registry=reg,
        )
        self.fallback_by_reason = {
            r: self.fallback.labels(*labels, r) for r in ("error", "deadline", "unavailable")
        }
        cache = Counter(CACHE, "Prediction cache look-ups.", [*LABELS, "tier", "result"], registry=reg)
        self.cache = {
            (t, r): cache.labels(*labels, t, r) for t in ("memory", "redis") for r in ("hit", "miss", "error")
        }
        mirror = Counter(MIRROR, "Requests mirrored to the shadow URL.", [*LABELS, "result"], registry=reg)
        self.mirror = {r: mirror.labels(*labels, r) for r in ("sent", "dropped", "failed")}
        forward = Counter(
            FORWARD,
            "Requests forwarded to the peer by user hash.",
            [*LABELS, "result"],
            registry=reg,
        )
        self.forward = {r: forward.labels(*labels, r) for r in ("sent", "dropped", "failed")}

    def _bind_model_loaded(self) -> None:
        self.model_loaded = Gauge(
            MODEL_LOADED,
            "1 when the model (role primary or fallback) is loaded and its digest verified, else 0.",
            [*LABELS, "role"],
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self.loaded_by_role = {
            r: self.model_loaded.labels(*self._labelvalues, r) for r in ("primary", "fallback")
        }

    def _bind_shadow(self) -> None:
        """Shadow agreement, on the pod that mirrors; children appear per ``peer_version``."""
        labels, reg = [*LABELS, PEER_VERSION], self.registry
        self._shadow_compared = Counter(
            SHADOW_COMPARED, "Rows whose shadow answer was compared with this pod's.", labels, registry=reg
        )
        self._shadow_agreed = Counter(
            SHADOW_AGREED,
            "Compared classifier rows where the shadow named the same class.",
            labels,
            registry=reg,
        )
        self._shadow_delta = Histogram(
            SHADOW_DELTA,
            "|own - shadow| per row: a regressor's value, a classifier's largest probability difference.",
            labels,
            buckets=DELTA_BUCKETS,
            registry=reg,
        )
        self._shadow_delta_squared = Counter(
            SHADOW_DELTA_SQUARED, "Sum of the squared shadow deltas.", labels, registry=reg
        )
        self._shadow_uncomparable = Counter(
            SHADOW_UNCOMPARABLE,
            "Rows whose shadow answer could not be compared, by reason.",
            [*labels, "reason"],
            registry=reg,
        )
        self._shadow_by_peer: dict[str, ShadowSeries] = {}

    def shadow(self, peer_version: str | None) -> ShadowSeries:
        """The series of one peer version: the first ``MAX_PEER_VERSIONS`` seen get their own, later
        ones share ``other``, an answer without a version ``unknown``."""
        peer = peer_version if peer_version else "unknown"
        series = self._shadow_by_peer.get(peer)
        if series is not None:
            return series
        named = sum(p not in ("other", "unknown") for p in self._shadow_by_peer)
        if peer not in ("other", "unknown") and named >= MAX_PEER_VERSIONS:
            return self.shadow("other")
        values = (*self._labelvalues, peer)
        series = ShadowSeries(
            peer=peer,
            compared=self._shadow_compared.labels(*values),
            agreed=self._shadow_agreed.labels(*values),
            delta=self._shadow_delta.labels(*values),
            delta_squared=self._shadow_delta_squared.labels(*values),
            uncomparable={r: self._shadow_uncomparable.labels(*values, r.value) for r in Uncomparable},
        )
        self._shadow_by_peer[peer] = series
        return series

    def _bind_quality(self) -> None:
        """Ground-truth labels joined to predictions (``feedback``): the feedback received, by
        result, under this pod's labels; the quality sums under the labels of the track that made
        each prediction, bound here for this pod's own and on first use for the others."""
        labels, reg = self._labelvalues, self.registry
        results = Counter(FEEDBACK, "Feedback items received, by result.", [*LABELS, "result"], registry=reg)
        self.feedback_results = {r: results.labels(*labels, r.value) for r in FeedbackResult}
        self._quality_families = tuple(
            Counter(name, text, LABELS, registry=reg)
            for name, text in (
                (LABELLED, "Predictions joined to a ground-truth label."),
                (LABEL_CORRECT, "Labelled classifier predictions whose class equals the label."),
                (LABEL_ABS_ERROR, "Sum of |label - prediction| over labelled regressor predictions."),
                (LABEL_SQUARED_ERROR, "Sum of (label - prediction)^2 over labelled regressor predictions."),
                (LABEL_LOG_LOSS, "Sum of -ln p(label) over labelled predictions with probabilities."),
                (LABEL_LOG_LOSS_SQUARED, "Sum of ln(p(label))^2 over those with probabilities."),
                (LABEL_WITH_PROBABILITIES, "Labelled classifier predictions that had probabilities."),
            )
        )
        self._quality: dict[tuple[str, str], QualitySeries] = {}
        self.quality(labels[1], labels[2])

    def quality(self, version: str, track: str) -> QualitySeries:
        """The quality series of the track and version that made a prediction; past
        ``MAX_QUALITY_VERSIONS`` pairs, a version is counted as ``other`` (bounded series)."""
        series = self._quality.get((version, track))
        if series is not None:
            return series
        if len(self._quality) >= MAX_QUALITY_VERSIONS:
            return self._quality.get(("other", track)) or self._bind_quality_series("other", track)
        return self._bind_quality_series(version, track)

    def _bind_quality_series(self, version: str, track: str) -> QualitySeries:
        values = (self._labelvalues[0], version, track)
        series = QualitySeries(*(family.labels(*values) for family in self._quality_families))
        self._quality[(version, track)] = series
        return series

    def _bind_explanations(self) -> None:
        """Explanation summaries (``explain``): rows by method, and per feature the sum of absolute
        attributions; features are the schema's, else ``x0``... up to ``MAX_EXPLAINED_FEATURES``."""
        labels, reg = self._labelvalues, self.registry
        rows = Counter(EXPLAINED_ROWS, "Rows explained, by method.", [*LABELS, "method"], registry=reg)
        self._explained_rows = rows
        self._attribution = Counter(
            ATTRIBUTION_ABS,
            "Sum over explained rows of each feature's absolute attribution.",
            [*LABELS, "feature"],
            registry=reg,
        )
        names = self.feature_names or tuple(f"x{i}" for i in range(MAX_EXPLAINED_FEATURES))
        self._attribution_by_feature = [self._attribution.labels(*labels, n) for n in names]
        self._attribution_other = self._attribution.labels(*labels, "other")

    def observe_explanation(self, method: str, attributions: Any) -> None:
        """One explanation's rows ([rows, features] attributions)."""
        array = np.abs(np.asarray(attributions, dtype=np.float64))
        if array.ndim != 2 or not len(array):
            return
        self._explained_rows.labels(*self._labelvalues, method).inc(len(array))
        sums = array.sum(axis=0)
        bound = len(self._attribution_by_feature)
        for child, total in zip(self._attribution_by_feature, sums[:bound].tolist(), strict=False):
            child.inc(total)
        if len(sums) > bound:
            self._attribution_other.inc(float(sums[bound:].sum()))

    def _bind_segments(self, schema: SchemaChecker | None) -> None:
        """Per segment value (#15): rows by outcome bound now (every value shows from 0); the
        class, label and shadow children on first use, each keyed by bounded values only."""
        coder = schema.segments if schema is not None else None
        self.segment_names: tuple[str, ...] = coder.names if coder is not None else ()
        self.segment_values: tuple[tuple[str, ...], ...] = coder.values if coder is not None else ()
        self.segment_keys = tuple(
            f"{n}:{zlib.crc32(chr(31).join(vs).encode()):08x}" for n, vs in self._segments()
        )
        """What a kept prediction names its segment codes by: the feature and a digest of its
        values, so a pod counts another track's codes only when it declares the segment alike."""
        self._segment_index = {k: s for s, k in enumerate(self.segment_keys)}
        labels, reg = self._labelvalues, self.registry
        seg = [SEGMENT, SEGMENT_VALUE]
        rows = Counter(
            SEGMENT_ROWS,
            "Rows answered (success, fallback) or failed (server_error), by segment value.",
            [*LABELS, *seg, "outcome"],
            registry=reg,
        )
        counted = (Outcome.SUCCESS, Outcome.FALLBACK, Outcome.SERVER_ERROR)
        self.segment_rows = {
            o: [[rows.labels(*labels, n, v, o) for v in vs] for n, vs in self._segments()] for o in counted
        }
        self._segment_predictions = Counter(
            SEGMENT_PREDICTIONS,
            "A classifier's predicted rows by segment value and class.",
            [*LABELS, *seg, "class"],
            registry=reg,
        )
        self._segment_quality_families = tuple(
            Counter(name, text, [*LABELS, *seg], registry=reg)
            for name, text in (
                (SEGMENT_LABELLED, "Predictions joined to a label, by the predicted row's segment value."),
                (SEGMENT_LABEL_CORRECT, "Labelled classifier rows whose class equals the label, by segment."),
                (SEGMENT_LABEL_ABS_ERROR, "Sum of |label - prediction| by segment value (regressors)."),
                (SEGMENT_LABEL_SQUARED_ERROR, "Sum of (label - prediction)^2 by segment value (regressors)."),
            )
        )
        self._segment_shadow_families = tuple(
            Counter(name, text, [*LABELS, PEER_VERSION, *seg], registry=reg)
            for name, text in (
                (SEGMENT_SHADOW_COMPARED, "Rows compared with the shadow's answer, by segment value."),
                (SEGMENT_SHADOW_AGREED, "Compared classifier rows where the shadow named the same class."),
            )
        )
        self._segment_children: dict[tuple[Any, ...], Any] = {}
        self._segment_prediction_children: dict[tuple[int, int, Any], Any] = {}

    def _segments(self) -> Iterable[tuple[str, tuple[str, ...]]]:
        return zip(self.segment_names, self.segment_values, strict=True)

    def _segment_child(self, family: Counter, key: tuple[Any, ...], values: Sequence[str]) -> Any:
        child = self._segment_children.get(key)
        if child is None:
            child = self._segment_children[key] = family.labels(*values)
        return child

    def observe_segment_rows(self, codes: np.ndarray[Any, Any] | None, outcome: Outcome) -> None:
        """Rows of one request by segment value: one ``inc`` per row and segment for a few rows, a
        bincount per segment (one ``inc`` per value seen) for more."""
        if codes is None or not len(codes):
            return
        by_segment = self.segment_rows[outcome]
        if len(codes) <= SMALL_BATCH:
            for row in codes.tolist():
                for children, code in zip(by_segment, row, strict=True):
                    children[code].inc()
            return
        for s, children in enumerate(by_segment):
            counts = np.bincount(codes[:, s], minlength=len(children))
            for code in np.flatnonzero(counts).tolist():
                children[code].inc(int(counts[code]))

    def observe_segment_predictions(
        self, codes: np.ndarray[Any, Any] | None, labels: np.ndarray[Any, Any] | None
    ) -> None:
        """A classifier's predicted classes by segment value; ``class`` bounded as the prediction
        histogram's is (declared or runtime classes, else the first seen, the rest ``other``)."""
        if codes is None or labels is None or not self.is_classifier or len(labels) != len(codes):
            return
        pairs: Iterable[tuple[tuple[int, int, Any], int]]
        if len(codes) <= SMALL_BATCH:
            pairs = (
                ((s, code, label), 1)
                for row, label in zip(codes.tolist(), labels.tolist(), strict=True)
                for s, code in enumerate(row)
            )
        else:
            pairs = collections.Counter(
                (s, code, label)
                for row, label in zip(codes.tolist(), labels.tolist(), strict=True)
                for s, code in enumerate(row)
            ).items()
        children = self._segment_prediction_children
        for key, n in pairs:
            child = children.get(key)
            if child is None:
                child = self._segment_prediction_child(*key)
            child.inc(n)

    def _segment_prediction_child(self, s: int, code: int, label: Any) -> Any:
        """The child of (segment, value, bounded class); remembered under the raw label while the
        map is small (labels past the bound share ``other``, so the map stays bounded)."""
        name, value = self.segment_names[s], self.segment_values[s][code]
        cls = self._bounded_class(label if isinstance(label, str) else str(label))
        child = self._segment_predictions.labels(*self._labelvalues, name, value, cls)
        if len(self._segment_prediction_children) < MAX_SEGMENT_PREDICTION_KEYS:
            self._segment_prediction_children[(s, code, label)] = child
        return child

    def _bounded_class(self, label: str) -> str:
        by_class = self.prediction_by_class
        child = by_class.get(label)
        if child is None:
            child = self._new_class(label)
        return label if label == OTHER_CLASS or child is not by_class.get(OTHER_CLASS) else OTHER_CLASS

    def count_segment_label(
        self,
        version: str,
        track: str,
        segments: Sequence[tuple[str, int]],
        *,
        correct: bool | None = None,
        error: float | None = None,
    ) -> None:
        """One joined label under each ``(segment key, value index)`` of its row, attributed to
        the track and version that predicted it (bounded as ``quality`` bounds them)."""
        self.quality(version, track)
        version = version if (version, track) in self._quality else "other"
        labelled, right, absolute, squared = self._segment_quality_families
        for key, code in segments:
            index = self._segment_index.get(key)
            if index is None or code >= len(self.segment_values[index]):
                continue  # a segment this pod does not declare, or declares otherwise
            name, value = self.segment_names[index], self.segment_values[index][code]
            values = (self._labelvalues[0], version, track, name, value)
            self._segment_child(labelled, ("l", *values), values).inc()
            if correct:
                self._segment_child(right, ("c", *values), values).inc()
            if error is not None:
                self._segment_child(absolute, ("a", *values), values).inc(error)
                self._segment_child(squared, ("s", *values), values).inc(error * error)

    def count_segment_shadow(
        self,
        peer: str,
        codes: np.ndarray[Any, Any],
        compared: Sequence[int],
        agreed: Sequence[int] | None,
    ) -> None:
        """Compared (and agreeing) rows, given by index into ``codes``, per segment value."""
        if not compared or not len(codes) or max(compared) >= len(codes):
            return
        families = self._segment_shadow_families
        for rows, family, tag in ((compared, families[0], "sc"), (agreed, families[1], "sa")):
            if rows is None:
                continue
            picked = codes[np.asarray(rows, dtype=np.intp)] if rows else codes[:0]
            for s, (name, values) in enumerate(self._segments()):
                counts = np.bincount(picked[:, s], minlength=len(values))
                for code in np.flatnonzero(counts).tolist():
                    labelvalues = (*self._labelvalues, peer, name, values[code])
                    self._segment_child(family, (tag, *labelvalues), labelvalues).inc(int(counts[code]))

    def bind_output(self, classes: Sequence[str] | None) -> None:
        """Fix the prediction histogram's layout once the output kind is known.

        ``classes`` None means a regressor; a (possibly empty) sequence a classifier whose
        ``class`` label takes the declared classes, or - when none are declared - the first
        ``MAX_CLASSES`` distinct labels seen, then ``"other"``. Called at start-up when the schema
        or reference declares the output, else once the model is loaded; later calls are no-ops.
        """
        if self.is_classifier is not None:
            return
        self.is_classifier = classes is not None
        self.classes = tuple(str(c) for c in classes or ())[:MAX_CLASSES]
        self._prediction_family = Histogram(
            PREDICTION_VALUE,
            "Predictions: for classifiers the predicted class's score, labelled by class; "
            "for regressors the predicted value (class empty).",
            [*LABELS, "class"],
            buckets=self._prediction_buckets(self._schema),
            registry=self.registry,
        )
        family = self._prediction_family
        if self.is_classifier:
            self.prediction_by_class = {
                c: family.labels(*self._labelvalues, c) for c in (*self.classes, OTHER_CLASS)
            }
        else:
            self.prediction_by_class = {"": family.labels(*self._labelvalues, "")}

    def bind_llm(self) -> LlmSeries:
        """The generative-answer series (``rollwise_llm_*``), registered only by the proxy's openai
        protocol, so the bundled server's exposition never shows them."""
        labels, reg = self._labelvalues, self.registry
        tokens = Counter(LLM_TOKENS, "Tokens by kind (prompt, completion).", [*LABELS, "kind"], registry=reg)
        finish = Counter(LLM_FINISH, "Answered choices by finish reason.", [*LABELS, "reason"], registry=reg)

        def timing(name: str, doc: str, buckets: Sequence[float]) -> Histogram:
            return Histogram(name, doc, LABELS, buckets=buckets, registry=reg).labels(*labels)

        return LlmSeries(
            first_token=timing(
                LLM_TIME_TO_FIRST_TOKEN,
                "Seconds from the request to the answer's first content token.",
                FIRST_TOKEN_BUCKETS,
            ),
            inter_token=timing(
                LLM_INTER_TOKEN_LATENCY,
                "Seconds between consecutive content chunks of a streamed answer.",
                INTER_TOKEN_BUCKETS,
            ),
            time_per_token=timing(
                LLM_TIME_PER_OUTPUT_TOKEN,
                "Per streamed answer with two or more content chunks: its mean gap between them, seconds.",
                TIME_PER_OUTPUT_TOKEN_BUCKETS,
            ),
            tokens_per_second=timing(
                LLM_OUTPUT_TOKENS_PER_SECOND,
                "Per answer: completion tokens over the seconds from the request to the answer's end.",
                OUTPUT_TOKENS_PER_SECOND_BUCKETS,
            ),
            tokens={k: tokens.labels(*labels, k.value) for k in TokenKind},
            finish={r: finish.labels(*labels, r.value) for r in FinishReason},
        )

    # ---- bucket layout -------------------------------------------------------------------------

    def _prediction_buckets(self, schema: SchemaChecker | None) -> tuple[float, ...]:
        if self.is_classifier:
            return SCORE_BUCKETS
        ref = self.reference.prediction if self.reference else None
        if isinstance(ref, drift.Binned):
            return ref.cuts
        if schema and schema.output and schema.output.buckets:
            return tuple(schema.output.buckets)
        return DEFAULT_VALUE_BUCKETS

    def _feature_cuts(self, name: str, schema: SchemaChecker | None, index: int) -> tuple[float, ...]:
        ref = self.reference.features.get(name) if self.reference else None
        if ref is not None:
            return ref.cuts
        if schema is not None:
            low, high = schema.lower[index], schema.upper[index]
            if np.isfinite(low) and np.isfinite(high) and high > low:
                return tuple(float(x) for x in np.linspace(low, high, 11)[1:-1])
        return DEFAULT_VALUE_BUCKETS

    # ---- hot path ------------------------------------------------------------------------------

    def observe_features(self, matrix: np.ndarray[Any, Any]) -> None:
        """One observation per row and declared feature; NaN (missing) is counted as missing."""
        if not self.feature_value or matrix.ndim != 2 or matrix.shape[1] != len(self.feature_value):
            return
        columns = matrix.astype(np.float64, copy=False).T
        for name, child, cuts, column in zip(
            self.feature_names, self.feature_value, self._feature_cuts_arrays, columns, strict=True
        ):
            missing = np.isnan(column)
            if missing.any():
                self.data_quality[(name, Problem.MISSING.value)].inc(int(missing.sum()))
                column = column[~missing]  # noqa: PLW2901 - the column without its missing cells
            _observe_many(child, _snap_to_cuts(column, cuts))

    def observe_predictions(
        self, labels: np.ndarray[Any, Any] | None, scores: np.ndarray[Any, Any] | None
    ) -> None:
        """One observation per row. A non-finite score is never observed: one NaN would make the
        histogram's sum NaN for the life of the pod (its class is still counted, with score 0)."""
        if self.is_classifier:
            if labels is None:
                return
            values = scores if scores is not None else np.ones(len(labels))
            by_class = self.prediction_by_class
            if len(labels) >= VECTOR_MIN:  # the proxy's batched rows: one update per class
                finite = np.asarray(values, dtype=np.float64)
                finite = np.where(np.isfinite(finite), finite, 0.0)
                names = np.asarray([v if isinstance(v, str) else str(v) for v in labels.tolist()])
                for label in np.unique(names).tolist():
                    child = by_class.get(label)
                    if child is None:
                        child = self._new_class(label)
                    _observe_many(child, finite[names == label])
                return
            for label, score in zip(labels.tolist(), values.tolist(), strict=True):
                child = by_class.get(label if isinstance(label, str) else str(label))
                if child is None:
                    child = self._new_class(str(label))
                child.observe(score if math.isfinite(score) else 0.0)
        elif scores is not None and self.is_classifier is not None:
            values = scores.astype(np.float64, copy=False).ravel()
            _observe_many(self.prediction_by_class[""], values[np.isfinite(values)])

    def _new_class(self, label: str) -> Any:
        """A class seen but not declared: its own series while fewer than MAX_CLASSES exist."""
        by_class = self.prediction_by_class
        if self.classes or len(by_class) > MAX_CLASSES or self._prediction_family is None:
            if len(by_class) < 4 * MAX_CLASSES:  # remember the alias, keeping the map bounded
                by_class[label] = by_class[OTHER_CLASS]
            return by_class[OTHER_CLASS]
        child = self._prediction_family.labels(*self._labelvalues, label)
        by_class[label] = child
        return child

    def count_problems(self, problems: Iterable[tuple[str, str]]) -> None:
        for feature, problem in problems:
            counter = self.data_quality.get((feature, problem)) or self.data_quality[("", problem)]
            counter.inc()

    # ---- exposition ----------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The text format for ``/metrics`` (aggregated over workers in multiprocess mode)."""
        if multiprocess_dir():
            from prometheus_client import multiprocess  # noqa: PLC0415 - only in multiprocess mode

            source = CollectorRegistry()
            multiprocess.MultiProcessCollector(source)  # type: ignore[no-untyped-call]  # untyped upstream
        else:
            source = self.registry
        out = CollectorRegistry()
        out.register(_Forward(source))
        out.register(PsiCollector(self, source))
        return generate_latest(out)


@dataclass(frozen=True, slots=True)
class ShadowSeries:
    """The bound children of one ``peer_version``."""

    peer: str
    compared: Any
    agreed: Any
    delta: Any
    delta_squared: Any
    uncomparable: dict[Uncomparable, Any]


@dataclass(frozen=True, slots=True)
class LlmSeries:
    """The bound ``rollwise_llm_*`` children (``ServerMetrics.bind_llm``)."""

    first_token: Any
    inter_token: Any
    time_per_token: Any
    """One observation per streamed answer of two or more content chunks: its mean gap."""
    tokens_per_second: Any
    """One observation per answer of one or more completion tokens."""
    tokens: dict[TokenKind, Any]
    finish: dict[FinishReason, Any]


@dataclass(frozen=True, slots=True)
class QualitySeries:
    """The bound quality children of one (version, track) that made predictions, in the order
    ``_bind_quality`` declares them."""

    labelled: Any
    correct: Any
    abs_error: Any
    squared_error: Any
    log_loss: Any
    log_loss_squared: Any
    with_probabilities: Any


class _Forward(Collector):
    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        return self.source.collect()


class PsiCollector(Collector):
    """``rollwise_feature_psi`` / ``rollwise_prediction_psi`` computed at scrape from the histograms."""

    def __init__(self, metrics: ServerMetrics, source: CollectorRegistry | None = None) -> None:
        self.metrics = metrics
        self.source = source

    def collect(self) -> Iterable[Metric]:
        ref = self.metrics.reference
        if ref is None or self.source is None:
            return []
        buckets, class_counts = self._read_histograms(self.source)
        values = list(self.metrics._labelvalues)
        feature_psi = GaugeMetricFamily(
            FEATURE_PSI,
            "Population stability index of each feature's live values against the model's reference.",
            labels=[*LABELS, "feature"],
        )
        reference_share = GaugeMetricFamily(
            FEATURE_REFERENCE,
            "The model's reference share of each feature's values at or below le (cumulative).",
            labels=[*LABELS, "feature", "le"],
        )
        for name, binned in ref.features.items():
            value = _psi_at(buckets.get(("f", name), []), binned)
            if value is not None:
                feature_psi.add_metric([*values, name], value)
            for le, share in _reference_points(binned):
                reference_share.add_metric([*values, name, le], share)
        prediction_psi = GaugeMetricFamily(
            PREDICTION_PSI,
            "Population stability index of live predictions against the model's reference.",
            labels=list(LABELS),
        )
        pref = ref.prediction
        if isinstance(pref, drift.ClassShares):
            value = drift.psi([class_counts.get(c, 0.0) for c in pref.classes], pref.fractions)
        else:
            value = _psi_at(buckets.get(("p", ""), []), pref) if isinstance(pref, drift.Binned) else None
        if value is not None:
            prediction_psi.add_metric(values, value)
        prediction_share = GaugeMetricFamily(
            PREDICTION_REFERENCE,
            "The model's reference share of each predicted class (a classifier's reference).",
            labels=[*LABELS, "class"],
        )
        if isinstance(pref, drift.ClassShares):
            for name, share in zip(pref.classes, pref.fractions, strict=True):
                prediction_share.add_metric([*values, name], share)
        return [feature_psi, prediction_psi, reference_share, prediction_share]

    def _read_histograms(
        self, source: CollectorRegistry
    ) -> tuple[dict[tuple[str, str], list[tuple[float, float]]], dict[str, float]]:
        """Cumulative ``(le, count)`` points per feature (``("f", name)``) and for a regressor's
        predictions (``("p", "")``), and a classifier's prediction count per class."""
        classifier = self.metrics.is_classifier
        buckets: dict[tuple[str, str], list[tuple[float, float]]] = {}
        class_counts: dict[str, float] = {}
        for family in source.collect():
            for s in family.samples:
                if s.name == FEATURE_VALUE + "_bucket":
                    key = ("f", s.labels["feature"])
                    buckets.setdefault(key, []).append((_le(s.labels["le"]), s.value))
                elif s.name == PREDICTION_VALUE + "_bucket" and not classifier:
                    buckets.setdefault(("p", ""), []).append((_le(s.labels["le"]), s.value))
                elif s.name == PREDICTION_VALUE + "_count" and classifier:
                    cls = s.labels["class"]
                    class_counts[cls] = class_counts.get(cls, 0.0) + s.value
        return buckets, class_counts


def _psi_at(points: list[tuple[float, float]], binned: drift.Binned) -> float | None:
    """PSI of the live histogram against a reference's bins; None without data in those bins."""
    counts = _bin_counts_at(points, binned.cuts)
    return None if counts is None else drift.psi(counts, binned.fractions)


def _reference_points(binned: drift.Binned) -> list[tuple[str, float]]:
    """A reference's cumulative shares at its cuts and +Inf, `le` written as Prometheus writes the
    matching histogram's bounds (prometheus_client's float formatting)."""
    points, running = [], 0.0
    for cut, fraction in zip([*binned.cuts, math.inf], binned.fractions, strict=True):
        running += fraction
        points.append((floatToGoString(cut), min(running, 1.0)))  # type: ignore[no-untyped-call]
    return points


def _le(text: str) -> float:
    return float("inf") if text == "+Inf" else float(text)


def _bin_counts_at(points: list[tuple[float, float]], cuts: Sequence[float]) -> list[float] | None:
    """Counts per reference bin from cumulative ``le`` buckets; None when a cut has no bucket."""
    cumulative = dict(points)
    if not cumulative:
        return None
    edges = [*cuts, float("inf")]
    counts, previous = [], 0.0
    for edge in edges:
        value = cumulative.get(float(edge))
        if value is None:
            return None
        counts.append(value - previous)
        previous = value
    return counts


class _FeatureHistogram(Histogram):
    """A histogram whose children each take the bins of their own feature.

    prometheus_client fixes buckets per metric, but each feature needs its reference's bins so
    PSI can be read from the buckets. A child's buckets are created in ``_metric_init`` from
    ``_upper_bounds``; we set those from ``bounds`` (keyed by the feature label) first, so no
    default bucket is ever created (in multiprocess mode it would linger in the files). The
    exposition reads ``_upper_bounds`` per child. Relies on prometheus_client internals; the
    bucket test in ``tests/serving/test_server.py`` fails if they change.
    """

    bounds: ClassVar[dict[str, Sequence[float]]] = {}

    def _metric_init(self) -> None:
        if self._labelvalues:
            cuts = self.bounds.get(self._labelvalues[-1])
            if cuts is not None:
                self._upper_bounds = [float(c) for c in cuts] + [float("inf")]
        super()._metric_init()


def _snap_to_cuts(
    values: np.ndarray[Any, Any], cuts: np.ndarray[Any, np.dtype[np.float64]]
) -> np.ndarray[Any, Any]:
    """Values within float32 rounding of a bin edge count as on it.

    FP32 clients send 6.3 as 6.3000002: compared with the reference's float64 edge 6.3 it would
    land one bin up, and in-distribution traffic would show drift that is only rounding.
    """
    if not len(values) or not len(cuts):
        return values
    nearest = cuts[np.abs(values[:, None] - cuts[None, :]).argmin(axis=1)]
    close = np.abs(values - nearest) <= 1.2e-7 * np.maximum(np.abs(nearest), 1e-30)
    return np.where(close, nearest, values)


VECTOR_MIN = 16
"""From this many values a histogram is updated once per bucket, not once per value."""


def _observe_many(child: Any, values: np.ndarray[Any, Any]) -> None:
    """``child.observe`` for every value. Past ``VECTOR_MIN`` values the buckets are counted with
    numpy and each bucket and the sum incremented once: what ``Histogram.observe`` does per value
    (``value <= bound``, first bound), at a fraction of the cost for the proxy's batched rows. It
    reads prometheus_client's ``_upper_bounds``/``_buckets``/``_sum`` (pinned in uv.lock); a test
    compares the two paths' exposition (tests/serving/test_metrics_vector.py)."""
    if len(values) < VECTOR_MIN:
        for v in values.tolist():
            child.observe(v)
        return
    bounds = np.asarray(child._upper_bounds, dtype=np.float64)
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds) + 1)
    child._sum.inc(float(values.sum()))
    for i in np.flatnonzero(counts[: len(bounds)]).tolist():
        child._buckets[i].inc(int(counts[i]))
