"""The server's metric contract (docs/metrics.md): names and label values the analysis queries.

The server registers its metrics under these names and the operator's PromQL reads them, so a
rename is one edit and both sides move together.
"""

from __future__ import annotations

from enum import StrEnum

PREFIX = "rollwise_"
LABELS = ("model", "version", "track")
"""Labels on every series: the served model, its version and its track."""

REQUESTS = PREFIX + "requests"
"""Counter of inference requests by `outcome` (exported as `rollwise_requests_total`)."""
REQUEST_DURATION = PREFIX + "request_duration_seconds"
"""Histogram of request latency, from received to response ready."""
INFLIGHT = PREFIX + "inflight_requests"
PREDICTION_VALUE = PREFIX + "prediction_value"
"""Histogram of predictions: by `class` for a classifier, by value for a regressor."""
PREDICTION_PSI = PREFIX + "prediction_psi"
"""Gauge: PSI of the prediction distribution against the model's reference."""
FEATURE_VALUE = PREFIX + "feature_value"
FEATURE_PSI = PREFIX + "feature_psi"
"""Gauge: PSI of one input feature (`feature` label) against the model's reference."""
FEATURE_REFERENCE = PREFIX + "feature_reference_share"
"""Gauge: the model's reference share of one feature's values at or below `le` (cumulative, like
the `rollwise_feature_value` buckets it matches), so the operator reads live bins and reference
bins from Prometheus alike."""
DATA_QUALITY = PREFIX + "data_quality"
FALLBACK = PREFIX + "fallback"
CACHE = PREFIX + "cache"
MIRROR = PREFIX + "mirror"
FORWARD = PREFIX + "forward"
MODEL_LOADED = PREFIX + "model_loaded"


class Outcome(StrEnum):
    """The `outcome` label of `rollwise_requests_total`."""

    SUCCESS = "success"
    CLIENT_ERROR = "client_error"
    """The request was refused (bad input): usually the caller's fault."""
    SERVER_ERROR = "server_error"
    FALLBACK = "fallback"
    """Answered by the fallback model because the primary failed or missed its deadline."""


class Problem(StrEnum):
    """The `problem` label of `rollwise_data_quality_total`: how an input missed the schema."""

    MISSING = "missing"
    OUT_OF_RANGE = "out_of_range"
    REJECTED = "rejected"
