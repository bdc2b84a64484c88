"""The declared feature schema: the model's inputs and outputs, as the serving image checks them.

The operator embeds it in `spec.model.featureSchema` and passes it inline to the server
(`--feature-schema`); a schema file shipped with a model is read by the same model, so a schema
the API accepts is exactly one the server loads.
"""

from __future__ import annotations

import itertools
import math
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from rollwise_contract.base import ApiModel, map_list, rule

MAX_FEATURES = 256
"""Bounds the features list (CEL cost estimates multiply by list sizes, so every list is bounded)."""
MAX_CLASSES = 256
"""Bounds a classifier's declared classes."""


class FeatureType(StrEnum):
    """Type of one input feature, as the serving image checks it."""

    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    CATEGORY = "category"
    """One of `values`; reaches the model as the value's index."""


FEATURE_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
"""A feature's name: also a Prometheus label value and a check's `feature`, so kept plain."""


class Feature(ApiModel):
    """One named input column; requests that break it get HTTP 422 listing every bad field."""

    name: str = Field(min_length=1, max_length=64, pattern=FEATURE_NAME)
    """Feature name as it appears in inference requests."""
    type: FeatureType = FeatureType.FLOAT
    """Value type. Default float."""
    min: float | None = None
    """Smallest accepted value (inclusive); float and int features only."""
    max: float | None = None
    """Largest accepted value (inclusive); float and int features only."""
    values: list[Annotated[str, Field(max_length=256)]] | None = Field(
        default=None, min_length=1, max_length=256
    )
    """Accepted values of a category feature, in the order the model encodes them (index 0, 1, ...)."""
    required: bool = True
    """Whether a request must carry this feature. Default true."""
    default: float | None = None
    """Value used when an optional feature is left out (otherwise NaN)."""

    @rule(
        cel="!has(self.min) || !has(self.max) || self.min <= self.max",
        field="min",
        message="must not exceed max; swap or fix the bounds",
    )
    def _bounds_ordered(self) -> bool:
        return self.min is None or self.max is None or self.min <= self.max

    @rule(
        cel="self.type == 'float' || self.type == 'int' || (!has(self.min) && !has(self.max))",
        field="type",
        message="min and max apply to float and int features only; remove them or change the type",
    )
    def _bounds_numeric(self) -> bool:
        numeric = self.type in (FeatureType.FLOAT, FeatureType.INT)
        return numeric or (self.min is None and self.max is None)

    @rule(
        cel="(self.type == 'category') == has(self.values)",
        field="values",
        message="required for type category and not allowed otherwise; list the category's values "
        "or change the type",
    )
    def _values_iff_category(self) -> bool:
        return (self.type is FeatureType.CATEGORY) == (self.values is not None)


class OutputKind(StrEnum):
    """What the model predicts."""

    CLASSIFIER = "classifier"
    REGRESSOR = "regressor"


class ModelOutput(ApiModel):
    """What the model returns; bounds the prediction metric's labels and drift histograms."""

    kind: OutputKind = OutputKind.CLASSIFIER
    """classifier or regressor. Default classifier."""
    classes: list[Annotated[str, Field(max_length=256)]] | None = Field(
        default=None, min_length=1, max_length=MAX_CLASSES
    )
    """Class labels as the model returns them (classifier)."""
    buckets: list[float] | None = Field(default=None, min_length=1, max_length=64)
    """Upper bounds of the prediction histogram buckets (regressor)."""


MAX_SEGMENTS = 4
"""Segment features per model: each multiplies the per-segment series."""
MAX_SEGMENT_VALUES = 20
"""Values (bins) per segment, `other` included: bounds every per-segment series' cardinality."""
OTHER_SEGMENT = "other"
"""The segment value of a category value past `maxValues`."""
MISSING_SEGMENT = "missing"
"""The segment value of a row whose segment feature was left out (an optional feature)."""


class Segment(ApiModel):
    """A feature that splits traffic into segments (a country, an age band): the server exports
    outcomes, predictions and labelled quality per segment value, so a check can judge each segment
    (`bySegment`) and a `parity` check can bound the gap between them."""

    feature: str = Field(min_length=1, max_length=64, pattern=FEATURE_NAME)
    """A declared feature of type category, bool, float or int."""
    bins: list[float] | None = Field(default=None, min_length=1, max_length=MAX_SEGMENT_VALUES - 2)
    """Cut points of a float or int feature, increasing: [18, 65] makes the values `<18`, `18..65`
    and `>=65`. Required for float and int features, refused for the others."""
    max_values: int = Field(default=10, ge=1, le=MAX_SEGMENT_VALUES - 2)
    """A category feature: its first maxValues declared values are segments of their own, the rest
    `other`. Default 10."""

    @rule(
        cel="!has(self.bins) || [" + ", ".join(str(i) for i in range(MAX_SEGMENT_VALUES - 3)) + "].all(i, "
        "i + 1 >= size(self.bins) || self.bins[i] < self.bins[i + 1])",
        field="bins",
        message="must strictly increase; sort them and drop repeats",
    )
    def _bins_increase(self) -> bool:
        return self.bins is None or all(a < b for a, b in itertools.pairwise(self.bins))

    def values(self, feature: Feature) -> tuple[str, ...]:
        """Every value this segment's label can take for `feature`, in order."""
        if self.bins:
            cuts = [f"{b:g}" for b in self.bins]
            inner = [f"{a}..{b}" for a, b in itertools.pairwise(cuts)]
            return (f"<{cuts[0]}", *inner, f">={cuts[-1]}", MISSING_SEGMENT)
        if feature.type is FeatureType.BOOL:
            return ("false", "true", MISSING_SEGMENT)
        kept = tuple((feature.values or [])[: self.max_values])
        rest = (OTHER_SEGMENT,) if len(feature.values or []) > self.max_values else ()
        return (*kept, *rest, MISSING_SEGMENT)

    def value_of(self, feature: Feature, x: float) -> str:
        """The segment value of one row's feature value as the model receives it (a category's
        index, a bool's 0/1, a number); NaN is `missing`."""
        if math.isnan(x):  # an optional feature left out
            return MISSING_SEGMENT
        if self.bins:
            below = sum(1 for b in self.bins if x >= b)
            return self.values(feature)[below]
        if feature.type is FeatureType.BOOL:
            return "true" if x else "false"
        index = int(x)
        values = feature.values or []
        if 0 <= index < min(len(values), self.max_values):
            return values[index]
        return OTHER_SEGMENT


class FeatureSchema(ApiModel):
    """The model's declared inputs and outputs, passed inline to the serving image (`--feature-schema`)."""

    features: list[Feature] = Field(min_length=1, max_length=MAX_FEATURES, json_schema_extra=map_list("name"))
    """Input features, in the order the model expects them."""
    output: ModelOutput | None = None
    """What the model returns; unset lets the serving image infer it."""
    segments: list[Segment] = Field(
        default_factory=list, max_length=MAX_SEGMENTS, json_schema_extra=map_list("feature")
    )
    """Features whose values split traffic into segments (at most 4): outcomes, predictions and
    labelled quality are exported per segment value."""

    @rule(
        cel="!has(self.segments) || self.segments.all(s, self.features.exists(f, f.name == s.feature && "
        "((f.type == 'float' || f.type == 'int') == has(s.bins))))",
        field="segments",
        message="each segment must name a declared feature, with bins for a float or int feature and "
        "without bins for a category or bool one; fix the feature name or the bins",
    )
    def _segments_declared(self) -> bool:
        by_name = {f.name: f for f in self.features}
        for s in self.segments:
            f = by_name.get(s.feature)
            if f is None or (f.type in (FeatureType.FLOAT, FeatureType.INT)) != (s.bins is not None):
                return False
        return True

    def segment(self, name: str) -> tuple[Segment, Feature] | None:
        """The segment on feature `name` and that feature, if declared."""
        by_name = {f.name: f for f in self.features}
        found = next((s for s in self.segments if s.feature == name), None)
        return (found, by_name[name]) if found is not None and name in by_name else None
