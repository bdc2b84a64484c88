"""Batch scoring's contract: what a ``rollwise-batch`` shard reports and how it exits.

The model server writes it (``rollwise_serving.batch``) and the operator reads it (the Job's
``podFailurePolicy`` from the exit codes, per-shard status from the termination message), so both
sides import it from here and neither keeps a copy.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator
from pydantic.alias_generators import to_camel

from rollwise_contract.features import OutputKind


class ExitCode(IntEnum):
    """A shard's exit status, meant for a Job's ``podFailurePolicy``."""

    SCORED = 0
    """Scored, or skipped because a finished run with the same fingerprint is there."""
    RETRY = 1
    """Anything a retry may fix (a failed download, a full disk, a killed node)."""
    SETTINGS = 2
    """Bad settings: every retry would fail the same way."""
    PERMANENT = 3
    """The model or the data is wrong (digest mismatch, unloadable artifact, corrupt input file, a
    missing column): a retry cannot fix it."""


PERMANENT_EXIT_CODES = (ExitCode.SETTINGS, ExitCode.PERMANENT)
"""Exit codes that fail the shard's index at once instead of spending its retries."""


class DataFormat(StrEnum):
    """Input and output file formats of a batch job."""

    PARQUET = "parquet"
    CSV = "csv"


class ShardState(StrEnum):
    """A shard's ``status`` in its report."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"
    """A rerun found the shard's done marker with the same fingerprint and scored nothing."""
    FAILED = "failed"


TALLY_FIELDS = (
    "rows",
    "candidate_correct",
    "baseline_correct",
    "baseline_only",
    "candidate_only",
    "agree",
    "candidate_abs_error",
    "baseline_abs_error",
    "candidate_sq_error",
    "baseline_sq_error",
    "abs_diff_sq",
    "sq_diff_sq",
)
"""A tally's fields in the order of its compact JSON form (a list, trailing zeros cut)."""


class Tally(BaseModel):
    """A backtest's paired counts over some rows, summed over shards by plain addition.

    Paired: both models scored the same labelled rows, so the judge tests the per-row difference
    (McNemar for accuracy, a paired z-test for errors) instead of two independent samples; the
    pairs' variance is far smaller than the two models' own. Written as a list of numbers
    (``TALLY_FIELDS`` order, trailing zeros cut): a termination message holds at most 4096 bytes,
    and a tally per segment value must fit beside the total."""

    model_config = ConfigDict(frozen=True)

    rows: int = Field(default=0, ge=0)
    """Labelled rows both models scored."""
    candidate_correct: int = Field(default=0, ge=0)
    """Classifier: rows whose candidate label equals the label column."""
    baseline_correct: int = Field(default=0, ge=0)
    baseline_only: int = Field(default=0, ge=0)
    """Classifier: rows the baseline (stable) got right and the candidate wrong (McNemar's b)."""
    candidate_only: int = Field(default=0, ge=0)
    """Classifier: rows the candidate got right and the baseline wrong (McNemar's c)."""
    agree: int = Field(default=0, ge=0)
    """Classifier: rows where both models predicted the same label, right or wrong."""
    candidate_abs_error: float = Field(default=0.0, ge=0)
    """Regressor: sum of |prediction - label|."""
    baseline_abs_error: float = Field(default=0.0, ge=0)
    candidate_sq_error: float = Field(default=0.0, ge=0)
    """Regressor: sum of (prediction - label)^2."""
    baseline_sq_error: float = Field(default=0.0, ge=0)
    abs_diff_sq: float = Field(default=0.0, ge=0)
    """Regressor: sum of (|e_candidate| - |e_baseline|)^2, the paired MAE difference's variance."""
    sq_diff_sq: float = Field(default=0.0, ge=0)
    """Regressor: sum of (e_candidate^2 - e_baseline^2)^2, the paired MSE difference's variance."""

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, data: Any) -> Any:
        if isinstance(data, (list, tuple)):
            if len(data) > len(TALLY_FIELDS):
                raise ValueError(f"a tally has at most {len(TALLY_FIELDS)} numbers")
            return dict(zip(TALLY_FIELDS, data, strict=False))
        return data

    @model_serializer
    def _as_list(self) -> list[float | int]:
        values: list[float | int] = [getattr(self, f) for f in TALLY_FIELDS]
        while values and not values[-1]:
            values.pop()
        return [round(v, 6) if isinstance(v, float) else v for v in values]

    def __add__(self, other: Tally) -> Tally:
        return Tally(**{f: getattr(self, f) + getattr(other, f) for f in TALLY_FIELDS})


class BacktestReport(BaseModel):
    """A backtest shard's tallies: the whole shard and each segment value of each declared segment."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, extra="ignore", frozen=True)

    kind: OutputKind
    """The candidate's output kind: which of the tally's counts mean something."""
    rows_unlabelled: int = Field(default=0, ge=0)
    """Rows whose label is missing: scored by neither model's tally."""
    rows_rejected: int = Field(default=0, ge=0)
    """Rows either model's feature schema refused (counted, never judged)."""
    total: Tally = Field(default_factory=Tally)
    segments: dict[str, dict[str, Tally]] = Field(default_factory=dict)
    """Segment feature -> segment value -> tally, from the candidate's feature schema."""
    segments_dropped: bool = False
    """The segments did not fit in the termination message's 4096 bytes; the judge then calls
    segment parity inconclusive rather than passing it unseen."""

    def __add__(self, other: BacktestReport) -> BacktestReport:
        segments: dict[str, dict[str, Tally]] = {}
        for source in (self.segments, other.segments):
            for feature, values in source.items():
                into = segments.setdefault(feature, {})
                for value, tally in values.items():
                    into[value] = into.get(value, Tally()) + tally
        return BacktestReport(
            kind=self.kind,
            rows_unlabelled=self.rows_unlabelled + other.rows_unlabelled,
            rows_rejected=self.rows_rejected + other.rows_rejected,
            total=self.total + other.total,
            segments=segments,
            segments_dropped=self.segments_dropped or other.segments_dropped,
        )


class ShardReport(BaseModel):
    """A shard's summary as it writes it to its termination message (one JSON line, at most 4096
    bytes) and its done marker; the operator reads only these fields and ignores the rest."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, extra="ignore", frozen=True)

    shard: int = Field(ge=0)
    shards: int = Field(ge=1)
    status: ShardState
    rows_in: int = Field(default=0, ge=0)
    rows_out: int = Field(default=0, ge=0)
    rows_rejected: int = Field(default=0, ge=0)
    seconds: float = Field(default=0.0, ge=0)
    part: str = ""
    rejects: str = ""
    model_sha256: str | None = None
    error: str | None = None
    backtest: BacktestReport | None = None
    """A backtest shard's tallies (``rollwise-batch --label-column``); None for a scoring shard."""
