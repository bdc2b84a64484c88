"""The backtest judge's error rates, shown by simulation (plan/backtest.py states them).

Each scenario draws many labelled datasets of paired outcomes from known true rates and counts how
often the judge fails the candidate. The rules must fail a candidate that meets its tolerance (A/A,
and the hardest case of the null: worse by exactly `worseBy`) in at most alpha of backtests (plus
Monte Carlo slack of three standard errors), catch a candidate 5 points less accurate at realistic
row counts, and pass a harmless difference inside `worseBy`. No threshold here is tuned to a
scenario: each is the rule's own level.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from rollwise.api.v1alpha1 import Backtest, BacktestPhase, Verdict
from rollwise.plan.backtest import backtest_job_name, judge, judge_metric
from rollwise_contract.batch import BacktestReport, Tally
from rollwise_contract.features import OutputKind

RUNS = 4000
ALPHA = 0.01


def _slack(rate: float, runs: int = RUNS) -> float:
    return 3 * math.sqrt(rate * (1 - rate) / runs)


def _spec(*metrics: dict[str, object], min_rows: int = 200) -> Backtest:
    return Backtest.model_validate(
        {
            "dataset": {"uri": "s3://bucket/history/"},
            "labelColumn": "y",
            "metrics": list(metrics),
            "confidence": 1 - ALPHA,
            "minRows": min_rows,
        }
    )


def _classifier_tallies(
    rng: np.random.Generator, n: int, acc_stable: float, stable_only: float, candidate_only: float, runs: int
) -> list[Tally]:
    """Paired outcomes per row: both right, stable right only (b), candidate right only (c), both
    wrong; disagreement between the models' labels is the discordant rows plus a tenth of the
    rows both got wrong."""
    both = acc_stable - stable_only
    p = [both, stable_only, candidate_only, 1 - both - stable_only - candidate_only]
    counts = rng.multinomial(n, p, size=runs)
    wrong_differently = rng.binomial(counts[:, 3], 0.1)
    return [
        Tally(
            rows=n,
            candidate_correct=int(k[0] + k[2]),
            baseline_correct=int(k[0] + k[1]),
            baseline_only=int(k[1]),
            candidate_only=int(k[2]),
            agree=int(n - k[1] - k[2] - w),
        )
        for k, w in zip(counts, wrong_differently, strict=True)
    ]


def _fail_rate(spec: Backtest, tallies: list[Tally], kind: OutputKind = OutputKind.CLASSIFIER) -> float:
    metric = spec.metrics[0]
    failed = sum(
        judge_metric(spec, metric, BacktestReport(kind=kind, total=t)).verdict is Verdict.FAILED
        for t in tallies
    )
    return failed / len(tallies)


@pytest.mark.parametrize(
    ("n", "worse_by", "stable_only", "candidate_only"),
    [
        pytest.param(5000, 0.0, 0.04, 0.04, id="A/A at 5000 rows, worseBy 0: the null's boundary"),
        pytest.param(300, 0.0, 0.04, 0.04, id="A/A at 300 rows, worseBy 0"),
        pytest.param(5000, 1.0, 0.04, 0.03, id="worse by exactly worseBy 1 point at 5000 rows"),
        pytest.param(1000, 1.0, 0.05, 0.04, id="worse by exactly worseBy 1 point at 1000 rows"),
        pytest.param(2000, 1.0, 0.035, 0.035, id="A/A at 2000 rows, worseBy 1"),
    ],
)
def test_accuracy_fails_a_candidate_within_worse_by_in_at_most_alpha_of_backtests(
    n: int, worse_by: float, stable_only: float, candidate_only: float
) -> None:
    rng = np.random.default_rng(n + int(100 * worse_by))
    spec = _spec({"name": "accuracy", "worseBy": worse_by})
    rate = _fail_rate(spec, _classifier_tallies(rng, n, 0.9, stable_only, candidate_only, RUNS))
    assert rate <= ALPHA + _slack(ALPHA), rate


@pytest.mark.parametrize(
    ("n", "stable_only", "candidate_only"),
    [
        pytest.param(2000, 0.07, 0.02, id="5 points worse at 2000 rows, 9 % of rows discordant"),
        pytest.param(1000, 0.06, 0.01, id="5 points worse at 1000 rows, 7 % discordant"),
    ],
)
def test_accuracy_catches_a_candidate_five_points_worse(
    n: int, stable_only: float, candidate_only: float
) -> None:
    rng = np.random.default_rng(7)
    spec = _spec({"name": "accuracy", "worseBy": 1})
    assert _fail_rate(spec, _classifier_tallies(rng, n, 0.9, stable_only, candidate_only, RUNS)) >= 0.99


def test_accuracy_passes_a_harmless_difference_inside_worse_by() -> None:
    rng = np.random.default_rng(11)
    spec = _spec({"name": "accuracy", "worseBy": 1})
    rate = _fail_rate(spec, _classifier_tallies(rng, 2000, 0.9, 0.033, 0.030, RUNS))
    assert rate <= ALPHA, rate


def test_agreement_fails_a_pair_agreeing_on_exactly_minimum_in_at_most_alpha() -> None:
    rng = np.random.default_rng(3)
    spec = _spec({"name": "agreement", "minimum": 95})
    n = 1000
    tallies = [Tally(rows=n, agree=int(n - d)) for d in rng.binomial(n, 0.05, RUNS)]
    assert _fail_rate(spec, tallies) <= ALPHA + _slack(ALPHA)
    # the exact test pays for its validity at any n with some power: 98 % at 1000 rows
    low = [Tally(rows=2 * n, agree=int(2 * n - d)) for d in rng.binomial(2 * n, 0.10, RUNS)]
    assert _fail_rate(spec, low) >= 0.99, "a pair agreeing on 90 % of 2000 rows is shown below 95 %"


def _regressor_tallies(rng: np.random.Generator, n: int, scale: float, runs: int) -> list[Tally]:
    """Stable's errors N(0, 1); the candidate's correlated with them (rho 0.8), scaled by `scale`."""
    out = []
    for _ in range(runs):
        e_s = rng.normal(0, 1, n)
        e_c = scale * (0.8 * e_s + 0.6 * rng.normal(0, 1, n))
        out.append(
            Tally(
                rows=n,
                candidate_abs_error=float(np.abs(e_c).sum()),
                baseline_abs_error=float(np.abs(e_s).sum()),
                candidate_sq_error=float((e_c**2).sum()),
                baseline_sq_error=float((e_s**2).sum()),
                abs_diff_sq=float(((np.abs(e_c) - np.abs(e_s)) ** 2).sum()),
                sq_diff_sq=float(((e_c**2 - e_s**2) ** 2).sum()),
            )
        )
    return out


@pytest.mark.parametrize("name", ["mae", "rmse"])
def test_error_metrics_keep_alpha_for_a_model_as_good_and_catch_one_a_fifth_worse(name: str) -> None:
    rng = np.random.default_rng(5)
    spec = _spec({"name": name, "worseBy": 0})
    runs = 1500
    assert _fail_rate(spec, _regressor_tallies(rng, 1000, 1.0, runs), OutputKind.REGRESSOR) <= ALPHA + _slack(
        ALPHA, runs
    )
    tolerant = _spec({"name": name, "worseBy": 0.05})
    assert _fail_rate(tolerant, _regressor_tallies(rng, 1000, 1.2, 500), OutputKind.REGRESSOR) >= 0.99


def _segmented(rng: np.random.Generator, worse_segment: int | None, runs: int) -> list[BacktestReport]:
    """Four segment values of 1500 rows; all A/A at worseBy 0, or one 8 points worse."""
    reports = []
    per = [
        _classifier_tallies(
            rng, 1500, 0.9, 0.09 if s == worse_segment else 0.04, 0.01 if s == worse_segment else 0.04, runs
        )
        for s in range(4)
    ]
    for r in range(runs):
        segs = {f"v{s}": per[s][r] for s in range(4)}
        total = Tally()
        for t in segs.values():
            total = total + t
        reports.append(BacktestReport(kind=OutputKind.CLASSIFIER, total=total, segments={"region": segs}))
    return reports


def test_segment_parity_keeps_alpha_over_all_segments_and_finds_the_worse_one() -> None:
    rng = np.random.default_rng(13)
    spec = _spec({"name": "accuracy", "worseBy": 0, "bySegment": True})
    aa = _segmented(rng, None, 2000)
    rate = sum(judge(spec, r)[0] is BacktestPhase.FAILED for r in aa) / len(aa)
    assert rate <= ALPHA + _slack(ALPHA, 2000), rate
    # 8 points worse in one segment of four is 2 points overall: worseBy 3 passes the total, so
    # only the parity check can catch it
    tolerant = _spec({"name": "accuracy", "worseBy": 3, "bySegment": True})
    bad = _segmented(rng, 2, 500)
    outcomes = [judge(tolerant, r) for r in bad]
    assert sum(phase is BacktestPhase.FAILED for phase, _, _ in outcomes) / len(bad) >= 0.99
    failing = next(results for phase, results, _ in outcomes if phase is BacktestPhase.FAILED)
    assert failing[0].segment == "region=v2"


@pytest.mark.parametrize(
    ("report", "message"),
    [
        pytest.param(
            BacktestReport(
                kind=OutputKind.CLASSIFIER,
                total=Tally(rows=50, candidate_correct=10, baseline_correct=50, baseline_only=40),
            ),
            "50 labelled rows scored by both models, fewer than minRows 200",
            id="too few rows is inconclusive even when the candidate looks far worse",
        ),
        pytest.param(
            BacktestReport(kind=OutputKind.REGRESSOR, total=Tally(rows=500)),
            "accuracy does not apply to a regressor model",
            id="a classifier metric on a regressor is inconclusive",
        ),
        pytest.param(
            BacktestReport(
                kind=OutputKind.CLASSIFIER,
                total=Tally(rows=500, candidate_correct=450, baseline_correct=450, agree=500),
                segments_dropped=True,
            ),
            "the shards' segment tallies did not fit their reports; parity not judged",
            id="segments lost from the report are inconclusive, not passed",
        ),
    ],
)
def test_no_verdict_is_never_a_pass(report: BacktestReport, message: str) -> None:
    spec = _spec({"name": "accuracy", "bySegment": True})
    phase, results, text = judge(spec, report)
    assert phase is BacktestPhase.INCONCLUSIVE
    assert results[0].message == message
    assert text == message


def test_a_failed_accuracy_names_the_numbers() -> None:
    t = Tally(
        rows=2000,
        candidate_correct=1700,
        baseline_correct=1800,
        baseline_only=140,
        candidate_only=40,
        agree=1820,
    )
    phase, results, message = judge(
        _spec({"name": "accuracy", "worseBy": 1}), BacktestReport(kind=OutputKind.CLASSIFIER, total=t)
    )
    assert phase is BacktestPhase.FAILED
    assert message == (
        "accuracy 85.00 % vs stable 90.00 % over 2000 rows (-5.00 points, upper bound -3.46): "
        "shown worse than by 1 points"
    )
    assert results[0].bound == pytest.approx(-3.46, abs=0.01)


def test_the_job_name_fits_an_indexed_jobs_pod_hostname() -> None:
    name = backtest_job_name("m" * 63, "0123456789")
    assert len(name) + len("-99") <= 63
    assert name == "m" * 40 + "-backtest-01234567"
