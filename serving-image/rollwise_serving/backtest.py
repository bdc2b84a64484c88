"""A backtest's tallies: two models' predictions on the same labelled rows -> paired counts.

Pure numpy, no I/O: ``rollwise-batch --label-column`` (``batch.BacktestRun``) feeds it one chunk
at a time and adds the tallies up; the operator's judge (``rollwise.plan.backtest``) adds the
shards' and tests them. Both models score every row, so each count is of pairs: the judge's tests
use the per-row difference between the models, whose variance is much smaller than either
model's own (two models that agree on 95 % of rows differ only on the other 5 %).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from rollwise_contract.batch import Tally
from rollwise_contract.features import OutputKind

from rollwise_serving.features import SegmentCoder

Values = np.ndarray[Any, Any]


def label_text(values: Values) -> np.ndarray[Any, np.dtype[np.str_]]:
    """Labels as text, so a label column of ints (``1``) or integral floats (``1.0``, what CSV and
    nullable columns give) equals a model's int or text label of the same class."""
    array = np.asarray(values)
    integral = array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array))
    if integral or array.dtype.kind == "b":
        array = array.astype(np.int64)
    return array.astype(str)


def tally_of(kind: OutputKind, candidate: Values, baseline: Values, labels: Values) -> Tally:
    """The paired tally of rows where both models answered and the label is known (the caller
    selects them). Classifier: correct counts, McNemar's discordant pairs, agreement; regressor:
    error sums and the sums of squared per-row error differences (the paired tests' variance)."""
    rows = len(labels)
    if rows == 0:
        return Tally()
    if kind is OutputKind.CLASSIFIER:
        truth, c, b = label_text(labels), label_text(candidate), label_text(baseline)
        c_ok, b_ok = c == truth, b == truth
        return Tally(
            rows=rows,
            candidate_correct=int(c_ok.sum()),
            baseline_correct=int(b_ok.sum()),
            baseline_only=int((b_ok & ~c_ok).sum()),
            candidate_only=int((c_ok & ~b_ok).sum()),
            agree=int((c == b).sum()),
        )
    truth_f = np.asarray(labels, dtype=np.float64)
    c_err = np.asarray(candidate, dtype=np.float64) - truth_f
    b_err = np.asarray(baseline, dtype=np.float64) - truth_f
    abs_diff = np.abs(c_err) - np.abs(b_err)
    sq_diff = c_err**2 - b_err**2
    return Tally(
        rows=rows,
        candidate_abs_error=float(np.abs(c_err).sum()),
        baseline_abs_error=float(np.abs(b_err).sum()),
        candidate_sq_error=float((c_err**2).sum()),
        baseline_sq_error=float((b_err**2).sum()),
        abs_diff_sq=float((abs_diff**2).sum()),
        sq_diff_sq=float((sq_diff**2).sum()),
    )


def add_segments(
    into: dict[str, dict[str, Tally]],
    kind: OutputKind,
    *,
    coder: SegmentCoder,
    inputs: Values,
    candidate: Values,
    baseline: Values,
    labels: Values,
) -> None:
    """Add each segment value's tally of these rows to ``into`` (segment feature -> value ->
    tally). Segment values come from the server's own coder (``features.SegmentCoder``) applied
    to the rows as the candidate received them, so a backtest's segments are the live checks'."""
    codes = coder.codes(inputs)
    for s, (name, values) in enumerate(zip(coder.names, coder.values, strict=True)):
        per_value = into.setdefault(name, {})
        for code in np.unique(codes[:, s]):
            rows = codes[:, s] == code
            tally = tally_of(kind, candidate[rows], baseline[rows], labels[rows])
            value = values[int(code)]
            per_value[value] = per_value.get(value, Tally()) + tally
