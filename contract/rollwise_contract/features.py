"""The declared feature schema: the model's inputs and outputs, as the serving image checks them.

The operator embeds it in `spec.model.featureSchema` and passes it inline to the server
(`--feature-schema`); a schema file shipped with a model is read by the same model, so a schema
the API accepts is exactly one the server loads.
"""

from __future__ import annotations

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


class FeatureSchema(ApiModel):
    """The model's declared inputs and outputs, passed inline to the serving image (`--feature-schema`)."""

    features: list[Feature] = Field(min_length=1, max_length=MAX_FEATURES, json_schema_extra=map_list("name"))
    """Input features, in the order the model expects them."""
    output: ModelOutput | None = None
    """What the model returns; unset lets the serving image infer it."""
