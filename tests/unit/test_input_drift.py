"""inputDrift (`plan/input_drift.py`): against the model's reference or stable's inputs, its
false-fail rate on simulated traffic that matches, how soon a shifted feature is caught, and the
cases without data."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from rollwise.api.v1alpha1 import MetricCheck
from rollwise.plan.input_drift import judge_input_drift
from rollwise.plan.measurement import Counts, Outcome
from rollwise.plan.stats import fixed_shares_evidence

CUTS = (4.0, 5.0, 5.5, 6.0, 6.5, 7.0)
REFERENCE = (0.05, 0.25, 0.2, 0.2, 0.15, 0.1, 0.05)
FEATURES = ("a", "b", "c", "d")


def check(**compare: Any) -> MetricCheck:
    doc: dict[str, Any] = {"name": "inputs", "builtin": "inputDrift", "threshold": {"max": 0.2}}
    if compare:
        doc["compare"] = compare
    return MetricCheck.model_validate(doc)


def _le(cut: float) -> str:
    return repr(cut)


def counts(
    live: dict[str, np.ndarray], *, reference: bool = True, stable: dict[str, np.ndarray] | None = None
) -> Counts:
    """Per-bin counts as the server's cumulative `le` buckets, and the reference's cumulative shares."""
    values: dict[tuple[str, ...], float] = {}
    for track, per_feature in (("candidate", live), ("stable", stable or {})):
        for feature, bins in per_feature.items():
            cum = np.cumsum(bins)
            for cut, c in zip(CUTS, cum, strict=False):
                values[(track, feature, _le(cut))] = float(c)
            values[(track, feature, "+Inf")] = float(cum[-1])
    if reference:
        for feature in live:
            shares = np.cumsum(REFERENCE)
            for cut, share in zip(CUTS, shares, strict=False):
                values[("reference", feature, _le(cut))] = float(share)
            values[("reference", feature, "+Inf")] = 1.0
    return Counts(values)


def _first_fail(
    rng: np.random.Generator, *, per_look: float, shares: np.ndarray, trials: int, looks: int = 60
) -> list[int | None]:
    """Per simulated rollout, the first look at which four features' values (the first drawn from
    `shares`, the rest from the reference), accumulated from the start, fail the check."""
    out: list[int | None] = []
    for _ in range(trials):
        totals = {f: np.zeros(len(REFERENCE)) for f in FEATURES}
        first = None
        for k in range(looks):
            n = rng.poisson(per_look)
            for f in FEATURES:
                totals[f] += rng.multinomial(n, shares if f == "a" else REFERENCE)
            if judge_input_drift(check(), counts(totals)).outcome is Outcome.FAIL:
                first = k + 1
                break
        out.append(first)
    return out


@pytest.mark.parametrize("per_look", [10, 100, 1000])
def test_inputs_like_the_reference_fail_in_at_most_1_percent_of_rollouts_however_often_one_looks(
    per_look: int,
) -> None:
    """Four features drawn from the reference, 60 looks: failed in at most 1 % of rollouts at
    confidence 0.99 (1.5 % allows for 400 rollouts' sampling error). The PSI alone, from 10
    values a feature drawn from the reference, is above 0.2 in 99 % of looks."""
    rng = np.random.default_rng(per_look)
    firsts = _first_fail(rng, per_look=per_look, shares=np.asarray(REFERENCE), trials=400)
    assert sum(f is not None for f in firsts) / len(firsts) <= 0.015


def test_one_feature_moved_to_its_top_bins_is_caught_within_a_few_looks() -> None:
    rng = np.random.default_rng(4)
    moved = np.asarray((0.0, 0.05, 0.05, 0.1, 0.2, 0.3, 0.3))
    firsts = _first_fail(rng, per_look=20, shares=moved, trials=200, looks=3)
    assert sum(f is not None for f in firsts) / len(firsts) >= 0.95, firsts


def test_the_verdict_names_the_feature_the_reference_and_the_bin() -> None:
    live = {"a": np.asarray([0, 0, 0, 0, 0, 10, 90]), "b": np.asarray(REFERENCE) * 100}
    judged = judge_input_drift(check(), counts(live))
    assert judged.outcome is Outcome.FAIL
    assert (
        judged.reason.startswith("input a PSI ")
        and "vs reference (most moved: above 90.0 % vs 5.0 %" in judged.reason
    )
    assert judged.reason.endswith("2 feature(s)): drifted")


def test_without_a_reference_the_candidates_inputs_are_compared_with_stables() -> None:
    same = {"a": np.asarray([5, 25, 20, 20, 15, 10, 5])}
    moved = {"a": np.asarray([0, 0, 0, 0, 0, 10, 90])}
    assert judge_input_drift(check(), counts(same, reference=False, stable=same)).outcome is Outcome.PASS
    judged = judge_input_drift(check(), counts(moved, reference=False, stable=same))
    assert judged.outcome is Outcome.FAIL and "vs stable" in judged.reason


def test_no_candidate_values_or_nothing_to_compare_with_is_no_data() -> None:
    assert judge_input_drift(check(), Counts({})).outcome is Outcome.INCONCLUSIVE
    alone = counts({"a": np.asarray([5, 25, 20, 20, 15, 10, 5])}, reference=False)
    assert judge_input_drift(check(), alone).outcome is Outcome.INCONCLUSIVE


def test_comparison_off_reads_the_psi_as_measured() -> None:
    few = {"a": np.asarray([0, 3, 0, 0, 0, 0, 2])}  # 5 values: a large PSI, no evidence
    assert judge_input_drift(check(), counts(few)).outcome is Outcome.PASS
    assert judge_input_drift(check(enabled=False), counts(few)).outcome is Outcome.FAIL


def test_fixed_shares_evidence_is_one_without_values_and_grows_with_a_shift() -> None:
    assert fixed_shares_evidence([0, 0], [0.5, 0.5]) == 1.0
    assert fixed_shares_evidence([50, 50], [0.5, 0.5]) < 1
    assert fixed_shares_evidence([90, 10], [0.5, 0.5]) > 1e6
