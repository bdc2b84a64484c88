"""The reference distribution shipped with a model, and the PSI that compares live traffic to it.

A reference says, per feature and for the prediction, which fraction of the training (or
validation) rows fell in each bin. Bins are given by their inner cut points; bin ``i`` holds
values ``v`` with ``cuts[i-1] < v <= cuts[i]`` (the first and last bins are open), which is
exactly Prometheus' ``le`` bucket rule, so the live histogram buckets *are* the reference bins
and PSI can be computed from the exported histograms alone (also when several worker processes
are aggregated). Classifier predictions use classes instead of cuts.

Format (JSON)::

    {"features": {"sepal_length": {"cuts": [5.0, 5.5, 6.0], "fractions": [0.2, 0.3, 0.3, 0.2]}},
     "prediction": {"classes": ["setosa", "versicolor"], "fractions": [0.5, 0.5]}}

PSI = sum over bins of (live - ref) * ln(live / ref), with both fractions floored at 1e-4 so an
empty bin does not make it infinite. Rules of thumb: < 0.1 stable, 0.1–0.25 moderate, > 0.25 shift.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
from pydantic import BaseModel, ConfigDict, Field

PSI_FLOOR = 1e-4
MAX_BINS = 50


class Binned(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    cuts: tuple[float, ...] = Field(min_length=1, max_length=MAX_BINS - 1)
    fractions: tuple[float, ...]

    @pydantic.model_validator(mode="after")
    def _shape(self) -> Binned:
        if len(self.fractions) != len(self.cuts) + 1:
            raise ValueError(
                f"needs len(cuts) + 1 = {len(self.cuts) + 1} fractions, got {len(self.fractions)}"
            )
        if list(self.cuts) != sorted(set(self.cuts)):
            raise ValueError("cuts must be strictly increasing")
        _check_fractions(self.fractions)
        return self


class ClassShares(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    classes: tuple[str, ...] = Field(min_length=1, max_length=MAX_BINS)
    fractions: tuple[float, ...]

    @pydantic.model_validator(mode="after")
    def _shape(self) -> ClassShares:
        if len(self.fractions) != len(self.classes):
            raise ValueError("needs one fraction per class")
        _check_fractions(self.fractions)
        return self


def _check_fractions(fractions: Sequence[float]) -> None:
    if any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-3):
        raise ValueError(f"fractions must be non-negative and sum to 1 (sum is {sum(fractions):.4f})")


class Reference(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    features: dict[str, Binned] = Field(default_factory=dict)
    prediction: Binned | ClassShares | None = None
    rows: int | None = None
    """How many rows the reference was computed from (information only)."""

    @classmethod
    def load(cls, path: str) -> Reference:
        try:
            raw = json.loads(Path(path).read_text())
        except OSError as err:
            raise ValueError(
                f"--reference: cannot read {path!r} ({err.strerror}); give a readable path"
            ) from err
        except json.JSONDecodeError as err:
            raise ValueError(f"--reference: {path!r} is not valid JSON ({err})") from err
        try:
            return cls.model_validate(raw)
        except pydantic.ValidationError as err:
            details = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
            raise ValueError(f"--reference: {details}") from err


def bin_counts(values: np.ndarray[Any, Any], cuts: Sequence[float]) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Counts per bin with the ``le`` rule: bin i holds cuts[i-1] < v <= cuts[i]."""
    index = np.searchsorted(np.asarray(cuts, dtype=np.float64), values, side="left")
    return np.bincount(index, minlength=len(cuts) + 1).astype(np.int64)


def fractions_of(values: np.ndarray[Any, Any], cuts: Sequence[float]) -> list[float]:
    counts = bin_counts(values, cuts)
    return [float(c) / max(1, int(counts.sum())) for c in counts]


def quantile_cuts(values: np.ndarray[Any, Any], bins: int) -> list[float]:
    """Inner cut points splitting ``values`` into about equal-count bins (duplicates dropped)."""
    qs = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    return sorted({round(float(q), 6) for q in qs})


def psi(live_counts: Sequence[float], reference_fractions: Sequence[float]) -> float | None:
    """Population stability index; None when there is no live data to compare."""
    total = float(sum(live_counts))
    if total <= 0:
        return None
    value = 0.0
    for count, ref in zip(live_counts, reference_fractions, strict=True):
        p = max(count / total, PSI_FLOOR)
        q = max(ref, PSI_FLOOR)
        value += (p - q) * math.log(p / q)
    return value
