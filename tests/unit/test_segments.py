"""Segments (#15): the schema's segment features, `bySegment: worst` and `parity`, their rules on
counts, their error rates on simulated rollouts, their queries and the spec problems."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from rollwise.api.v1alpha1 import AnalysisSpec, MetricCheck, ModelDeployment
from rollwise.plan.analysis import query_problems, requests_for, start
from rollwise.plan.measurement import Counts, Outcome
from rollwise.plan.segments import judge_parity, judge_worst
from rollwise_contract.features import FeatureSchema

from tests.unit.manifests import base

T0 = datetime(2025, 1, 1, tzinfo=UTC)
SCHEMA = {
    "features": [
        {"name": "age", "type": "int", "min": 0, "max": 120},
        {"name": "country", "type": "category", "values": ["fr", "de", "us", "es"]},
    ],
    "segments": [{"feature": "age", "bins": [18, 65]}, {"feature": "country", "maxValues": 3}],
}


def _check(**kw: Any) -> MetricCheck:
    doc = {
        "name": "q",
        "builtin": "accuracy",
        "threshold": {"min": 0},
        "bySegment": "worst",
        "segment": "country",
    }
    return MetricCheck.model_validate({**doc, **kw})


def _labels(per_segment: dict[str, tuple[float, float, float, float]]) -> Counts:
    """(candidate labelled, correct, stable labelled, correct) per country."""
    values: dict[tuple[str, ...], float] = {}
    for v, (n_c, ok_c, n_s, ok_s) in per_segment.items():
        values |= {
            ("candidate", v, "labelled"): n_c,
            ("candidate", v, "correct"): ok_c,
            ("stable", v, "labelled"): n_s,
            ("stable", v, "correct"): ok_s,
        }
    return Counts(values)


# ---- the schema ---------------------------------------------------------------------------------


def test_segment_values_are_bounded_and_named_the_same_on_both_sides() -> None:
    schema = FeatureSchema.model_validate(SCHEMA)
    age, age_feature = schema.segment("age") or (None, None)
    assert age is not None and age_feature is not None
    assert age.values(age_feature) == ("<18", "18..65", ">=65", "missing")
    assert [age.value_of(age_feature, x) for x in (17, 18, 64.9, 65, float("nan"))] == [
        "<18", "18..65", "18..65", ">=65", "missing"
    ]  # fmt: skip
    country, c = schema.segment("country") or (None, None)
    assert country is not None and c is not None
    assert country.values(c) == ("fr", "de", "us", "other", "missing")
    assert [country.value_of(c, i) for i in (0, 2, 3)] == ["fr", "us", "other"]


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        ([{"feature": "height", "bins": [1]}], "each segment must name a declared feature"),
        ([{"feature": "age"}], "with bins for a float or int feature"),
        ([{"feature": "country", "bins": [1]}], "without bins for a category or bool one"),
        ([{"feature": "age", "bins": [65, 18]}], "must strictly increase"),
    ],
)
def test_a_bad_segment_is_refused_naming_the_fix(segments: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        FeatureSchema.model_validate({**SCHEMA, "segments": segments})


# ---- bySegment: worst ---------------------------------------------------------------------------


def test_a_candidate_broken_for_one_segment_fails_naming_it() -> None:
    counts = _labels(
        {"fr": (100, 50, 900, 810), "de": (1000, 900, 9000, 8100), "us": (1000, 900, 9000, 8100)}
    )  # the fr segment: 50 % against 90 %; all traffic together only 4 points worse
    judged = judge_worst(_check(), counts)
    assert judged.outcome is Outcome.FAIL
    assert judged.reason.startswith("1 of 3 segments worse: country=fr: accuracy 50.0 % vs stable 90.0 %")


def test_an_equal_candidate_passes_every_segment_and_thin_ones_do_not_hold_it() -> None:
    counts = _labels({"fr": (5, 5, 50, 45), "de": (1000, 900, 9000, 8100), "us": (1000, 905, 9000, 8100)})
    judged = judge_worst(_check(), counts)
    assert judged.outcome is Outcome.PASS
    assert judged.reason.startswith("2 of 3 segments passed at 99.6667 % each; worst country=de")
    assert judged.reason.endswith("too thin to judge: fr")


def _worst_fails(
    rng: np.random.Generator, *, shares: list[float], acc_c: list[float], trials: int, weight: float = 0.1
) -> float:
    """Share of simulated rollouts bySegment fails within 30 looks: 20 labels/s, 10 % of them the
    candidate's (`weight`), split over segments by `shares`; stable's accuracy 0.9 in every segment."""
    c = _check(minSamples=20)
    names = [f"s{i}" for i in range(len(shares))]
    failed = 0
    for _ in range(trials):
        totals = {v: [0.0, 0.0, 0.0, 0.0] for v in names}
        for _look in range(30):
            for v, share, acc in zip(names, shares, acc_c, strict=True):
                n = rng.poisson(100 * share)
                n_c = rng.binomial(n, weight)
                t = totals[v]
                t[0] += n_c
                t[1] += rng.binomial(n_c, acc)
                t[2] += n - n_c
                t[3] += rng.binomial(n - n_c, 0.9)
            counts = _labels({v: (t[0], t[1], t[2], t[3]) for v, t in totals.items()})
            if judge_worst(c, counts).outcome is Outcome.FAIL:
                failed += 1
                break
    return failed / trials


def test_an_aa_candidate_is_failed_by_some_segment_in_at_most_1_percent_of_rollouts() -> None:
    """Five segments, each judged at 1 - 0.01 / 5: the whole rule stays within 1 % (1.5 % allows
    for the simulation's sampling error at 400 rollouts... bounded at 2 %)."""
    rng = np.random.default_rng(5)
    rate = _worst_fails(rng, shares=[0.05, 0.15, 0.2, 0.25, 0.35], acc_c=[0.9] * 5, trials=400)
    assert rate <= 0.02


@pytest.mark.parametrize(("weight", "caught"), [(0.1, 0.6), (0.25, 0.95)])
def test_a_candidate_broken_for_a_5_percent_segment_is_caught(weight: float, caught: float) -> None:
    """The issue's case: one segment of 5 % of traffic at 40 % accuracy (stable 90 %), the rest as
    good as stable, where all traffic together is only 2.5 points worse. At 20 labels/s for 30
    looks the candidate's segment gets 15 labels at weight 10 (caught in 70 % of rollouts), 38 at
    weight 25 (98 %): a small segment needs weight or time."""
    rng = np.random.default_rng(6)
    rate = _worst_fails(rng, shares=[0.05, 0.95], acc_c=[0.4, 0.9], trials=100, weight=weight)
    assert rate >= caught


# ---- parity -------------------------------------------------------------------------------------


def _parity(**kw: Any) -> MetricCheck:
    doc = {
        "name": "fair",
        "builtin": "parity",
        "segment": "country",
        "parity": {"of": "positiveRate", "positiveClass": "approved"},
        "threshold": {"max": 30},
        "minSamples": 100,
    }
    return MetricCheck.model_validate({**doc, **kw})


def _approvals(cand: dict[str, tuple[float, float]], stable: dict[str, tuple[float, float]]) -> Counts:
    """(approved, declined) rows per country and track."""
    values: dict[tuple[str, ...], float] = {}
    for track, rows in (("candidate", cand), ("stable", stable)):
        for v, (yes, no) in rows.items():
            values[(track, v, "approved")] = yes
            values[(track, v, "declined")] = no
    return Counts(values)


def test_parity_fails_a_candidate_that_widens_the_gap_between_segments() -> None:
    stable = {"fr": (5000, 5000), "de": (5200, 4800)}
    wider = _approvals({"fr": (300, 700), "de": (550, 450)}, stable)  # 30 % against 55 %
    judged = judge_parity(_parity(), wider)
    assert judged.outcome is Outcome.FAIL
    assert judged.reason.startswith(
        "positive rate of 'approved' by country: gap 25.0 pp (fr 30.0 % .. de 55.0 %)"
    )
    assert "vs stable 2.0 pp" in judged.reason and judged.reason.endswith(": wider")
    same = _approvals({"fr": (500, 500), "de": (520, 480)}, stable)
    assert judge_parity(_parity(), same).outcome is Outcome.PASS


def test_parity_without_two_segments_is_no_data() -> None:
    judged = judge_parity(_parity(), _approvals({"fr": (500, 500)}, {"fr": (500, 500)}))
    assert judged.outcome is Outcome.INCONCLUSIVE


def test_an_aa_candidate_fails_parity_in_at_most_1_percent_of_rollouts() -> None:
    """Both tracks with the same 6-point gap (47 % / 53 %), 30 looks, 10 % of 100 rows a look the
    candidate's: the candidate is called wider (worseBy 2) in at most 1 % of rollouts."""
    rng = np.random.default_rng(9)
    c = _parity()
    failed = 0
    trials = 300
    for _ in range(trials):
        tot = {(t, v): [0.0, 0.0] for t in ("candidate", "stable") for v in ("fr", "de")}
        for _look in range(30):
            for v, p in (("fr", 0.47), ("de", 0.53)):
                n = rng.poisson(50)
                n_c = rng.binomial(n, 0.1)
                for t, m in (("candidate", n_c), ("stable", n - n_c)):
                    yes = rng.binomial(m, p)
                    tot[(t, v)][0] += yes
                    tot[(t, v)][1] += m - yes
            counts = _approvals(
                {v: tuple(tot[("candidate", v)]) for v in ("fr", "de")},  # type: ignore[misc]
                {v: tuple(tot[("stable", v)]) for v in ("fr", "de")},  # type: ignore[misc]
            )
            if judge_parity(c, counts).outcome is Outcome.FAIL:
                failed += 1
                break
    assert failed / trials <= 0.01


# ---- queries and spec problems ------------------------------------------------------------------


def _md(**check: Any) -> ModelDeployment:
    doc = base()
    doc["spec"]["model"]["featureSchema"] = SCHEMA
    doc["spec"]["model"]["version"] = "2.0.0"
    doc["status"] = {"stableVersion": "1.0.0"}
    doc["spec"]["rollout"]["analysis"] = {
        "metrics": [check or _check().model_dump(by_alias=True, exclude_none=True)]
    }
    return ModelDeployment.model_validate(doc)


def test_a_segment_check_reads_its_segments_counters_only() -> None:
    md = _md()
    s = md.spec.rollout.analysis
    assert isinstance(s, AnalysisSpec)
    (_, request) = requests_for(md, s, start(s, step=1, now=T0), step=1, at=T0 + timedelta(seconds=30))
    assert request.by == ("track", "value", "series")
    assert 'rollwise_segment_labelled_total{namespace="ml"' in request.promql
    assert 'track="candidate",version="2.0.0",segment="country"}' in request.promql
    parity = _md(**_parity().model_dump(by_alias=True, exclude_none=True))
    s = parity.spec.rollout.analysis
    assert isinstance(s, AnalysisSpec)
    (_, request) = requests_for(parity, s, start(s, step=1, now=T0), step=1, at=T0 + timedelta(seconds=30))
    assert request.by == ("track", "value", "class")
    assert "rollwise_segment_predictions_total{" in request.promql and 'segment="country"' in request.promql


def test_a_segment_that_is_not_declared_makes_the_spec_invalid_naming_it() -> None:
    md = _md(**_check(segment="height").model_dump(by_alias=True, exclude_none=True))
    assert query_problems(md) == [
        "spec.rollout.analysis.metrics[0].segment: 'height' is not a segment of spec.model.featureSchema "
        "(declared: ['age', 'country']); add it to featureSchema.segments or fix the name"
    ]
    unnamed = _check().model_dump(by_alias=True, exclude_none=True)
    del unnamed["segment"]
    (problem,) = query_problems(_md(**unnamed))
    assert problem.startswith("spec.rollout.analysis.metrics[0].segment: required when")


def test_segment_fields_are_refused_where_they_mean_nothing() -> None:
    with pytest.raises(ValidationError, match="applies to successRate, accuracy"):
        _check(builtin="latencyP99", threshold={"max": 1})
    with pytest.raises(ValidationError, match="required for builtin parity"):
        MetricCheck.model_validate({"name": "p", "builtin": "parity", "threshold": {"max": 5}})
    with pytest.raises(ValidationError, match="required for positiveRate"):
        _parity(parity={"of": "positiveRate"})


def test_monitoring_audits_parity_on_the_stable_segments_alone() -> None:
    from rollwise.plan import monitoring  # noqa: PLC0415

    doc = base()
    doc["spec"]["model"]["featureSchema"] = SCHEMA
    parity = _parity().model_dump(by_alias=True, exclude_none=True)
    doc["spec"]["monitoring"] = {"metrics": [parity], "intervalSeconds": 60}
    doc["status"] = {
        "phase": "Healthy",
        "stableVersion": "1.0.0",
        "stableRevision": "r",
        "monitoring": {"revision": "r", "startedAt": T0.isoformat()},
    }
    md = ModelDeployment.model_validate(doc)
    (q,) = monitoring.due_queries(md, T0 + timedelta(seconds=60))
    assert 'segment="country"' in q.promql and 'track="stable"' in q.promql
    assert q.promql.startswith("label_replace(sum by (track, value, class)")
    wide = _approvals({"fr": (3000, 7000), "de": (7000, 3000)}, {})
    judged = judge_parity(_parity(), wide)
    assert judged.outcome is Outcome.FAIL and "outside <= 30" in judged.reason
