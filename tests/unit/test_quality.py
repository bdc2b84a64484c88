"""The label and shadow checks (`plan/quality.py`): their error rates on simulated rollouts (A/A
runs and known effects), their rules on counts, their queries, and the bake step that waits for
late labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from rollwise.api.v1alpha1 import AnalysisSpec, Canary, CanaryStep, MetricCheck, ModelDeployment, Verdict
from rollwise.plan.analysis import Measured, QueryRequest, counted, record, requests_for, start
from rollwise.plan.measurement import Counts, Outcome
from rollwise.plan.quality import judge_accuracy, judge_agreement, judge_delta
from rollwise.plan.stats import Moments, mean_difference
from rollwise.plan.steps import Analyze, canary_steps, describe_step

from tests.unit.manifests import base

T0 = datetime(2025, 1, 1, tzinfo=UTC)
LOOKS, INTERVAL = 60, 5
"""A step looked at every 5 s for 5 minutes, as in test_stats."""


def _check(builtin: str, **kw: Any) -> MetricCheck:
    threshold = {"min": 0} if builtin in ("accuracy", "predictionAgreement") else {"max": 1e9}
    return MetricCheck.model_validate({"name": "q", "builtin": builtin, "threshold": threshold, **kw})


def _labels(n_c: float, ok_c: float, n_s: float, ok_s: float) -> Counts:
    return Counts(
        {
            ("candidate", "labelled"): n_c,
            ("candidate", "correct"): ok_c,
            ("stable", "labelled"): n_s,
            ("stable", "correct"): ok_s,
        }
    )


# ---- error rates on simulated rollouts -----------------------------------------------------------


def _first_worse_mean(
    rng: np.random.Generator, draw: Any, *, rate: float, share: float, shift: float, trials: int
) -> list[int | None]:
    """Per simulated rollout, the first look at which the candidate's mean loss is shown above
    stable's (tolerance 0, 99 %), or None. Labels arrive as a Poisson stream of `rate` per second,
    each for the candidate with probability `share`; the candidate's losses are stable's plus
    `shift`. Sums accumulate from the start, as the operator reads the counters."""
    out: list[int | None] = []
    for _ in range(trials):
        n = rng.poisson(rate * INTERVAL, LOOKS)
        n_c = rng.binomial(n, share)
        n_s = n - n_c
        losses_c = draw(rng, int(n_c.sum())) + shift
        losses_s = draw(rng, int(n_s.sum()))
        ends_c, ends_s = np.cumsum(n_c), np.cumsum(n_s)
        sum_c, sq_c = (
            np.concatenate([[0], np.cumsum(losses_c)]),
            np.concatenate([[0], np.cumsum(losses_c**2)]),
        )
        sum_s, sq_s = (
            np.concatenate([[0], np.cumsum(losses_s)]),
            np.concatenate([[0], np.cumsum(losses_s**2)]),
        )
        first = None
        for k in range(LOOKS):
            a, b = int(ends_c[k]), int(ends_s[k])
            if a == 0 or b == 0:
                continue
            iv = mean_difference(
                Moments(a, float(sum_c[a]), float(sq_c[a])),
                Moments(b, float(sum_s[b]), float(sq_s[b])),
                alpha=0.01,
            )
            if iv.lower > 0:
                first = k + 1
                break
        out.append(first)
    return out


def _log_loss(rng: np.random.Generator, n: int) -> np.ndarray[Any, Any]:
    """-ln p(true class) of a decent classifier: p ~ Beta(8, 2), a long right tail."""
    return -np.log(np.clip(rng.beta(8, 2, n), 1e-15, 1.0))


def _abs_error(rng: np.random.Generator, n: int) -> np.ndarray[Any, Any]:
    """|label - prediction| of a regressor with Gaussian errors of sd 3."""
    return np.abs(rng.normal(0.0, 3.0, n))


@pytest.mark.parametrize(("draw", "name"), [(_log_loss, "log loss"), (_abs_error, "absolute error")])
@pytest.mark.parametrize(("rate", "trials"), [(2, 1000), (20, 1000), (200, 250)])
@pytest.mark.parametrize("share", [0.1, 0.5])
def test_an_aa_candidate_is_shown_worse_on_a_mean_in_at_most_1_percent_of_rollouts(
    draw: Any, name: str, rate: int, trials: int, share: float
) -> None:
    """The stated error rate of logLoss and meanAbsoluteError: a candidate whose losses come from
    stable's distribution is called worse (tolerance 0, confidence 0.99) in at most 1 % of
    rollouts over 60 looks, skewed losses included. 1.5 % (3 % at 250 rollouts) allows for the
    simulation's own sampling error."""
    rng = np.random.default_rng(rate * 10 + int(share * 100) + len(name))
    firsts = _first_worse_mean(rng, draw, rate=rate, share=share, shift=0.0, trials=trials)
    bound = 0.015 if trials >= 1000 else 0.03
    assert sum(f is not None for f in firsts) / trials <= bound


@pytest.mark.parametrize(("draw", "shift"), [(_log_loss, 0.1), (_abs_error, 0.6)])
def test_a_candidate_with_a_known_extra_loss_is_caught(draw: Any, shift: float) -> None:
    """A candidate worse by about a quarter of stable's mean loss (0.1 nats on 0.24; 0.6 on 2.4)
    at 20 labels/s, 10 % of them the candidate's: shown worse in nearly every rollout within the
    5 minutes, mostly in the first two."""
    rng = np.random.default_rng(7)
    firsts = _first_worse_mean(rng, draw, rate=20, share=0.1, shift=shift, trials=200)
    caught = [f for f in firsts if f is not None]
    assert len(caught) >= 0.95 * len(firsts)
    assert float(np.median(caught)) * INTERVAL <= 120


def _accuracy_first_fail(
    rng: np.random.Generator, *, acc_s: float, acc_c: float, rate: float, share: float, trials: int
) -> list[int | None]:
    """The first look at which `judge_accuracy` fails the candidate, labels as in the mean case."""
    c = _check("accuracy")
    out: list[int | None] = []
    for _ in range(trials):
        n = rng.poisson(rate * INTERVAL, LOOKS)
        n_c = np.cumsum(rng.binomial(n, share))
        n_s = np.cumsum(n) - n_c
        ok_c = np.cumsum(rng.binomial(np.diff(n_c, prepend=0), acc_c))
        ok_s = np.cumsum(rng.binomial(np.diff(n_s, prepend=0), acc_s))
        first = None
        for k in range(LOOKS):
            judged = judge_accuracy(c, _labels(n_c[k], ok_c[k], n_s[k], ok_s[k]))
            if judged.outcome is Outcome.FAIL:
                first = k + 1
                break
        out.append(first)
    return out


@pytest.mark.parametrize("rate", [2, 20])
@pytest.mark.parametrize("accuracy", [0.6, 0.9])
def test_an_equally_accurate_candidate_fails_accuracy_in_at_most_1_percent_of_rollouts(
    rate: int, accuracy: float
) -> None:
    rng = np.random.default_rng(rate + int(accuracy * 10))
    firsts = _accuracy_first_fail(rng, acc_s=accuracy, acc_c=accuracy, rate=rate, share=0.1, trials=500)
    assert sum(f is not None for f in firsts) / len(firsts) <= 0.02


@pytest.mark.parametrize(
    ("rate", "share", "caught_share", "median_seconds"),
    [(20, 0.1, 0.7, 240), (20, 0.25, 0.95, 120), (200, 0.1, 0.95, 40)],
)
def test_a_candidate_8_points_less_accurate_is_caught(
    rate: int, share: float, caught_share: float, median_seconds: int
) -> None:
    """The issue's case, 90 % against 82 % with the default 1-point tolerance: what labels cost.
    At 20 labels/s with 10 % of them the candidate's (60 labels a minute) it is caught within 5
    minutes in about 3 rollouts of 4, median about 3 minutes; at 25 % in every one, median
    about 1.5 minutes; at 200 labels/s, 10 %, median about 25 s (bench figures in the README)."""
    rng = np.random.default_rng(3)
    firsts = _accuracy_first_fail(rng, acc_s=0.9, acc_c=0.82, rate=rate, share=share, trials=200)
    caught = [f for f in firsts if f is not None]
    assert len(caught) >= caught_share * len(firsts)
    assert float(np.median(caught)) * INTERVAL <= median_seconds


# ---- the rules on counts --------------------------------------------------------------------------


def test_accuracy_fails_a_shown_worse_candidate_and_says_by_how_much() -> None:
    judged = judge_accuracy(_check("accuracy"), _labels(1000, 820, 9000, 8100))
    assert judged.outcome is Outcome.FAIL
    assert judged.value == pytest.approx(82.0)
    assert judged.reason.startswith("accuracy 82.0 % vs stable 90.0 % (+8.0 pp wrong, 99 % CI +")
    assert judged.reason.endswith("1000 vs 9000 labels): worse")
    assert judged.comparison is not None and judged.comparison.lower is not None
    assert judged.comparison.lower > 1.0


def test_accuracy_passes_an_equal_candidate_only_with_min_samples_labels() -> None:
    thin = judge_accuracy(_check("accuracy"), _labels(60, 54, 600, 540))
    assert thin.outcome is Outcome.INCONCLUSIVE
    assert thin.reason.startswith(
        "60 labels on the candidate since the analysis started, fewer than minSamples 100"
    )
    enough = judge_accuracy(_check("accuracy", minSamples=50), _labels(60, 54, 600, 540))
    assert enough.outcome is Outcome.PASS


def test_a_failure_shown_on_fewer_than_min_samples_labels_stands() -> None:
    judged = judge_accuracy(_check("accuracy"), _labels(60, 10, 600, 590))
    assert judged.outcome is Outcome.FAIL


def test_accuracy_below_its_threshold_fails_only_when_shown() -> None:
    c = MetricCheck.model_validate({"name": "q", "builtin": "accuracy", "threshold": {"min": 90}})
    assert judge_accuracy(c, _labels(100, 88, 0, 0)).outcome is Outcome.PASS  # 88 of 100: not proof
    failed = judge_accuracy(c, _labels(1000, 850, 0, 0))
    assert failed.outcome is Outcome.FAIL
    assert "stable: no labels to compare with" in failed.reason
    assert "85 is outside >= 90" in failed.reason


def test_no_label_on_the_candidate_is_no_data() -> None:
    judged = judge_accuracy(_check("accuracy"), _labels(0, 0, 100, 90))
    assert judged.outcome is Outcome.INCONCLUSIVE
    assert judged.reason == "no data: no label has reached a candidate prediction yet"


def test_mean_absolute_error_compares_means_in_the_targets_unit() -> None:
    c = _check("meanAbsoluteError")
    how = counted(_md(), c)
    assert how is not None
    same = Counts(
        {
            ("candidate", "n"): 500, ("candidate", "total"): 1000, ("candidate", "squares"): 2500,
            ("stable", "n"): 5000, ("stable", "total"): 10000, ("stable", "squares"): 25000,
        }
    )  # fmt: skip
    assert how.judge(c, same).outcome is Outcome.PASS
    worse = Counts({**same.values, ("candidate", "total"): 1500, ("candidate", "squares"): 5000})
    judged = how.judge(c, worse)
    assert judged.outcome is Outcome.FAIL
    assert judged.reason.startswith("mean absolute error 3 vs stable 2 (+1, 99 % CI +")


def test_prediction_agreement_fails_when_shown_below_its_minimum() -> None:
    c = MetricCheck.model_validate({"name": "q", "builtin": "predictionAgreement", "threshold": {"min": 95}})
    flipped = judge_agreement(c, Counts({("compared",): 1000, ("agreed",): 900}))
    assert flipped.outcome is Outcome.FAIL
    assert flipped.reason.startswith("agreement 90.00 % over 1000 mirrored rows (100 differ)")
    assert judge_agreement(c, Counts({("compared",): 1000, ("agreed",): 995})).outcome is Outcome.PASS
    assert judge_agreement(c, Counts({("compared",): 20, ("agreed",): 18})).outcome is Outcome.INCONCLUSIVE


def test_prediction_delta_fails_when_the_mean_delta_is_shown_above_its_maximum() -> None:
    c = MetricCheck.model_validate({"name": "q", "builtin": "predictionDelta", "threshold": {"max": 0.05}})
    small = Counts({("compared",): 1000, ("delta",): 20, ("squares",): 1})
    large = Counts({("compared",): 1000, ("delta",): 200, ("squares",): 50})
    assert judge_delta(c, small).outcome is Outcome.PASS
    judged = judge_delta(c, large)
    assert judged.outcome is Outcome.FAIL
    assert "0.2 is outside <= 0.05" in judged.reason


# ---- API ------------------------------------------------------------------------------------------


def test_min_samples_is_for_label_and_shadow_checks_only_and_shadow_checks_do_not_compare() -> None:
    with pytest.raises(ValidationError, match="applies to the label, shadow and parity checks"):
        _check("successRate", minSamples=10)
    with pytest.raises(ValidationError, match="the shadow checks compare the two answers themselves"):
        _check("predictionAgreement", compare={"worseBy": 1})
    assert _check("accuracy").comparison is not None
    assert _check("accuracy").comparison.worse_by == 1.0  # type: ignore[union-attr]
    assert _check("predictionAgreement").comparison is None


def test_a_bake_step_is_one_action_and_becomes_an_analysis_that_waits() -> None:
    with pytest.raises(ValidationError, match="exactly one of setWeight, pause, analysis or bake"):
        CanaryStep.model_validate({"setWeight": 10, "bake": {"durationSeconds": 60}})
    steps = canary_steps(
        Canary.model_validate({"steps": [{"setWeight": 10}, {"bake": {"durationSeconds": 600, "count": 2}}]})
    )
    assert steps[1] == Analyze(count=2, bake=timedelta(minutes=10))
    assert describe_step(steps[1]) == "bake 10m00s (analysis looking)"


# ---- queries --------------------------------------------------------------------------------------


def _md() -> ModelDeployment:
    doc = base()
    doc["status"] = {"stableVersion": "1.0.0"}
    doc["spec"]["model"]["version"] = "2.0.0"
    return ModelDeployment.model_validate(doc)


def test_label_counts_are_read_per_track_by_the_version_that_predicted() -> None:
    """A label reaches any replica of either track, so a track is read by its own labels (track
    and version), not by the pod that exported it; a label for an earlier candidate never counts."""
    s = AnalysisSpec.model_validate({"metrics": [_check("accuracy").model_dump(by_alias=True)]})
    (_, request) = requests_for(_md(), s, start(s, step=1, now=T0), step=1, at=T0 + timedelta(seconds=30))
    assert request.by == ("track", "series")
    both = 'namespace="ml",pod=~"iris-(stable|candidate)-[^-]+-[^-]+",model="iris",track=~"stable|candidate"'
    q = request.promql
    assert q.count(" or label_replace(") == 3
    assert f'rollwise_labelled_total{{{both},track="candidate",version="2.0.0"}}' in q
    assert f'rollwise_label_correct_total{{{both},track="stable",version="1.0.0"}}' in q
    assert q.startswith("label_replace(sum by (track) (")
    assert q.endswith(', "series", "correct", "", "")')


def test_shadow_counts_are_the_stable_pods_comparisons_with_this_candidate_only() -> None:
    c = MetricCheck.model_validate({"name": "q", "builtin": "predictionAgreement", "threshold": {"min": 95}})
    s = AnalysisSpec.model_validate({"metrics": [c.model_dump(by_alias=True)]})
    (_, request) = requests_for(_md(), s, start(s, step=1, now=T0), step=1, at=T0 + timedelta(seconds=30))
    assert request.by == ("series",)
    stable = 'namespace="ml",pod=~"iris-stable-[^-]+-[^-]+",model="iris",track="stable"'
    assert f'rollwise_shadow_agreed_total{{{stable},peer_version="2.0.0"}}' in request.promql
    assert request.promql.startswith("label_replace(sum by () (")


# ---- the bake -------------------------------------------------------------------------------------


def _bake_spec() -> AnalysisSpec:
    check = _check("accuracy", minSamples=10).model_dump(by_alias=True)
    return AnalysisSpec.model_validate(
        {"metrics": [check], "intervalSeconds": 10, "count": 1, "minSampleCount": 0}
    )


def _look(index: int, counts: Counts, at: datetime) -> list[Measured]:
    return [Measured(QueryRequest("q", index, 1, "x", at, ("track", "series")), counts)]


def test_a_bake_tallies_nothing_but_failures_until_it_ends_then_judges_on_everything() -> None:
    s, bake = _bake_spec(), timedelta(seconds=30)
    a = start(s, step=1, now=T0)
    good = _labels(200, 180, 2000, 1800)
    for i in range(2):  # looks at 10 s and 20 s: inside the bake
        a = record(s, a, _look(i, good, T0 + timedelta(seconds=10 * (i + 1))), step=1, count=None, bake=bake)
        assert a.verdict is Verdict.RUNNING
        assert a.metrics[0].successful == 0 and a.baked == i + 1
        assert a.metrics[0].message.startswith(f"baking, {30 - 10 * (i + 1)}s left: accuracy 90.0 %")
    a = record(s, a, _look(2, good, T0 + timedelta(seconds=30)), step=1, count=None, bake=bake)
    assert a.verdict is Verdict.SUCCESSFUL and a.metrics[0].successful == 1


def test_a_look_that_fails_during_a_bake_ends_it_at_once() -> None:
    s = _bake_spec()
    a = start(s, step=1, now=T0)
    bad = _labels(1000, 820, 9000, 8100)
    a = record(s, a, _look(0, bad, T0 + timedelta(seconds=10)), step=1, count=None, bake=timedelta(hours=1))
    assert a.verdict is Verdict.FAILED
