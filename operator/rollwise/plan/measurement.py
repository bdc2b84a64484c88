"""What a metric provider answers, and what one measurement is judged to be.

Apart from `analysis.py` (which queries are due, how tallies conclude) and `compare.py` (the
candidate against stable) so both read the same types and neither imports the other's rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from rollwise.api.v1alpha1 import ComparisonResult


@dataclass(frozen=True)
class Value:
    """The query returned one finite-or-infinite number (NaN is reported as `NoData`)."""

    value: float


@dataclass(frozen=True)
class Counts:
    """A grouped query's answer: one number per combination of the grouping labels' values, e.g.
    `{("candidate", "success"): 412.0, ("stable", "server_error"): 3.0}`. Missing keys are zero."""

    values: Mapping[tuple[str, ...], float] = field(default_factory=dict)

    def get(self, *key: str) -> float:
        return self.values.get(key, 0.0)

    def by_le(self, *prefix: str) -> dict[float, float]:
        """A histogram's cumulative counts keyed by bound, for the keys that start with `prefix`
        and end with an `le` label (`"+Inf"` is inf; a key whose last label is not a number is left
        out), e.g. `by_le("candidate")` of counts grouped by (track, le)."""
        out: dict[float, float] = {}
        for key, value in self.values.items():
            if len(key) == len(prefix) + 1 and key[:-1] == prefix:
                try:
                    out[float(key[-1])] = value
                except ValueError:
                    continue
        return out


@dataclass(frozen=True)
class NoData:
    """The query succeeded but returned nothing to judge (empty vector, NaN)."""

    detail: str = "the query returned no data"


@dataclass(frozen=True)
class QueryError:
    """The query could not be answered: unreachable, timed out, rejected, circuit open."""

    detail: str


Measurement = Value | Counts | NoData | QueryError


class MetricProvider(Protocol):
    """A metric source (`metrics/prometheus.py`). Providers do I/O and never judge."""

    def query(self, promql: str, at: datetime, by: Sequence[str] = ()) -> Measurement:
        """Evaluate `promql` at instant `at`: a `Value` when it yields exactly one number, or, when
        `by` names labels, `Counts` keyed by those labels' values (an empty vector is no counts)."""
        ...


class Outcome(StrEnum):
    """One measurement's judgement."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Judged:
    outcome: Outcome
    value: float | None
    reason: str
    comparison: ComparisonResult | None = None
    not_worse: bool = False
    """The comparison showed the candidate no worse than stable by more than the tolerance."""
