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
PREDICTION_REFERENCE = PREFIX + "prediction_reference_share"
"""Gauge: the model's reference share of each predicted `class` (a classifier's reference), so
monitoring can judge live predictions against the training distribution from Prometheus alone."""
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


# ---- model quality (#15): ground-truth labels joined to predictions, and shadow agreement -------
# Label series carry the labels of the track that *made* the prediction (model, version, track),
# whichever pod received the feedback, so `sum by (track)` over them is each track's quality.

FEEDBACK = PREFIX + "feedback"
"""Counter of feedback items received, by `result` (`FeedbackResult`), exported as
`rollwise_feedback_total`, on the pod that received them (its own labels)."""
LABELLED = PREFIX + "labelled"
"""Counter of predictions joined to a ground-truth label (`rollwise_labelled_total`)."""
LABEL_CORRECT = PREFIX + "label_correct"
"""Counter of labelled classifier predictions whose predicted class equals the label."""
LABEL_ABS_ERROR = PREFIX + "label_abs_error"
"""Counter: the sum of |label - prediction| over labelled regressor predictions."""
LABEL_SQUARED_ERROR = PREFIX + "label_squared_error"
"""Counter: the sum of (label - prediction)^2 over labelled regressor predictions (with the
absolute sum it gives the spread of the absolute error, which the judge's interval needs)."""
LABEL_LOG_LOSS = PREFIX + "label_log_loss"
"""Counter: the sum of -ln(p(label)) over labelled classifier predictions that had probabilities,
p clipped to [1e-15, 1]."""
LABEL_LOG_LOSS_SQUARED = PREFIX + "label_log_loss_squared"
"""Counter: the sum of ln(p(label))^2, for the spread of the log loss."""
LABEL_WITH_PROBABILITIES = PREFIX + "label_with_probabilities"
"""Counter of labelled classifier predictions that had probabilities (the log loss's count)."""

SHADOW_COMPARED = PREFIX + "shadow_compared"
"""Counter, on the pod that mirrors (stable): requests whose shadow answer was compared with its own,
by `peer_version` (the shadow's `model_version`); one per row."""
SHADOW_AGREED = PREFIX + "shadow_agreed"
"""Counter of compared classifier rows where both answered the same class, by `peer_version`."""
SHADOW_DELTA = PREFIX + "shadow_delta"
"""Histogram of |own - shadow| per compared row, by `peer_version`: the predicted value for
regressors, the largest absolute difference of class probabilities for classifiers with
probabilities (rows without them are not observed)."""
SHADOW_DELTA_SQUARED = PREFIX + "shadow_delta_squared"
"""Counter: the sum of the squared deltas, for the spread of the mean delta."""
SHADOW_UNCOMPARABLE = PREFIX + "shadow_uncomparable"
"""Counter of rows answered 200 by this pod whose shadow answer could not be compared with its own,
by `peer_version` and `reason` (`Uncomparable`); with `rollwise_shadow_compared_total` it sums to
every mirrored row this pod answered itself (not from the fallback)."""
PEER_VERSION = "peer_version"
MAX_PEER_VERSIONS = 4
"""Distinct `peer_version` values a pod keeps; later ones are counted as `other` (and an answer
without a readable version as `unknown`), so a shadow cannot grow the series without bound."""


class Uncomparable(StrEnum):
    """The `reason` label of `rollwise_shadow_uncomparable_total`."""

    REFUSED = "refused"
    """The shadow answered below 500 but not 200: a 4xx (its schema or name refused the copy)."""
    UNPARSEABLE = "unparseable"
    """The shadow's 200 answer is not an OIP `/infer` or `/predict` answer."""
    MISMATCH = "mismatch"
    """Readable, but not comparable: another row count, no label (classifier) or value (regressor)
    where stable has one, a non-finite value."""


class FeedbackResult(StrEnum):
    """The `result` label of `rollwise_feedback_total`."""

    JOINED = "joined"
    """Joined to the prediction it names."""
    UNMATCHED = "unmatched"
    """No kept prediction has that id: unknown, from another model, or older than the retention."""
    DUPLICATE = "duplicate"
    """The prediction already has a label; the first one stands."""
    INVALID = "invalid"
    """Refused: malformed item, a label that is not a class, a value that is not a finite number."""


# ---- segments (#15): the same signals per segment value of a declared segment feature ----------
# Every per-segment series carries `segment` (the feature) and `value` (`Segment.value_of`), bounded
# by the schema (at most 4 segments of at most 20 values). Label series are attributed like the
# whole-traffic ones: to the track and version that made the prediction.

SEGMENT = "segment"
SEGMENT_VALUE = "value"
SEGMENT_ROWS = PREFIX + "segment_rows"
"""Counter of rows the model answered (`outcome` success or fallback) or failed on (server_error),
by segment value; refused requests have no trusted features and are not counted here."""
SEGMENT_PREDICTIONS = PREFIX + "segment_predictions"
"""Counter of a classifier's predicted rows by segment value and `class` (bounded like
`rollwise_prediction_value`'s)."""
EXPLAINED_ROWS = PREFIX + "explained_rows"
"""Counter of rows explained by `POST /v2/models/{name}/explain` (#17), by `method`."""
ATTRIBUTION_ABS = PREFIX + "attribution_abs"
"""Counter: the sum over explained rows of each feature's absolute attribution (`feature`); over
`rollwise_explained_rows_total` it is the mean absolute attribution, comparable across tracks."""
MAX_EXPLAINED_FEATURES = 32
"""Features named in `rollwise_attribution_abs_total` without a schema (`x0`...); the rest are `other`."""

SEGMENT_LABELLED = PREFIX + "segment_labelled"
"""Counter of labelled predictions by segment value (the segment of the predicted row)."""
SEGMENT_LABEL_CORRECT = PREFIX + "segment_label_correct"
SEGMENT_LABEL_ABS_ERROR = PREFIX + "segment_label_abs_error"
SEGMENT_LABEL_SQUARED_ERROR = PREFIX + "segment_label_squared_error"
SEGMENT_SHADOW_COMPARED = PREFIX + "segment_shadow_compared"
"""Counter, on the mirroring pod: compared rows by segment value and `peer_version`."""
SEGMENT_SHADOW_AGREED = PREFIX + "segment_shadow_agreed"

# ---- generative models behind the signals proxy (#18): OpenAI-compatible traffic ---------------
# Exported only by `rollwise-proxy --protocol openai`; the bundled server never registers them, so
# its exposition is unchanged.

LLM_TIME_TO_FIRST_TOKEN = PREFIX + "llm_time_to_first_token_seconds"
"""Histogram: from the request reaching the proxy to the first content token of the answer (the
first chunk carrying text of a streamed answer; the whole answer for one that is not streamed)."""
LLM_INTER_TOKEN_LATENCY = PREFIX + "llm_inter_token_latency_seconds"
"""Histogram: the gaps between consecutive content chunks of a streamed answer, one per gap."""
LLM_TIME_PER_OUTPUT_TOKEN = PREFIX + "llm_time_per_output_token_seconds"
"""Histogram, one per streamed answer with two or more content chunks: that answer's mean gap
between content chunks, (last chunk's time - first chunk's) / (chunks - 1). One observation per
answer, so the answers are independent draws (the per-gap histogram's gaps within one stream are
not): `interTokenLatencyP95` judges this one."""
LLM_OUTPUT_TOKENS_PER_SECOND = PREFIX + "llm_output_tokens_per_second"
"""Histogram, one per answer with at least one completion token (streamed or not): its completion
tokens over the whole answer's time, from the request reaching the proxy to the answer's end
(`outputTokensPerSecond` judges it)."""
LLM_TOKENS = PREFIX + "llm_tokens"
"""Counter of tokens by `kind` (`TokenKind`): from the answer's `usage` when it has one, else the
completion's content chunks counted (the prompt's tokens then unknown, not counted)."""
LLM_FINISH = PREFIX + "llm_finish"
"""Counter of answered choices by `reason` (`FinishReason`): why the model stopped."""


class TokenKind(StrEnum):
    """The `kind` label of `rollwise_llm_tokens_total`."""

    PROMPT = "prompt"
    COMPLETION = "completion"


class FinishReason(StrEnum):
    """The `reason` label of `rollwise_llm_finish_total`: OpenAI's `finish_reason`, bounded."""

    STOP = "stop"
    LENGTH = "length"
    """Cut at `max_tokens` (or the context): a truncated answer."""
    CONTENT_FILTER = "content_filter"
    """Refused or cut by the server's content filter."""
    TOOL_CALLS = "tool_calls"
    OTHER = "other"
    """Any other value a server sends (`function_call`, a vendor's own)."""
    NONE = "none"
    """The answer ended without a finish reason (a stream cut off, a server that sends none)."""
