"""Validation after promotion (`spec.monitoring`, `plan/monitoring.py`): looks on the stable track
while no rollout runs, `ModelHealthy`, Events, webhooks, `onDegraded: rollback`, and the error rate
of a degradation verdict on simulated looks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from rollwise.api.v1alpha1 import (
    ConditionType,
    MetricCheck,
    Monitoring,
    MonitoringStatus,
    Phase,
    Reason,
    WebhookType,
)
from rollwise.plan import monitoring
from rollwise.plan.analysis import Measured
from rollwise.plan.decision import Decision
from rollwise.plan.measurement import Counts, Outcome, Value

from tests.unit.rollout_world import World, at
from tests.unit.test_machine import md_of

MONITOR = {
    "metrics": [
        {"name": "success", "builtin": "successRate", "threshold": {"min": 99}},
        {"name": "accuracy", "builtin": "accuracy", "threshold": {"min": 90}, "minSamples": 50},
    ],
    "intervalSeconds": 60,
}
HOOK = [{"name": "pager", "type": "modelDegraded", "url": "https://hooks.example/rollwise"}]


def _md(on_degraded: str = "alert") -> Any:
    return md_of(
        {"canary": {"steps": [{"setWeight": 50}]}, "webhooks": HOOK},
        monitoring={**MONITOR, "onDegraded": on_degraded},
    )


def _requests(ok: float, server_errors: float = 0) -> Counts:
    return Counts({("candidate", "success"): ok, ("candidate", "server_error"): server_errors})


def _labels(n: float, correct: float) -> Counts:
    return Counts({("candidate", "labelled"): n, ("candidate", "correct"): correct})


def _look(w: World, seconds: float, accuracy: Counts, requests: Counts | None = None) -> list[Measured]:
    due = monitoring.due_queries(w.md, at(seconds))
    assert due, f"no look due at {seconds}s: {w.md.status.monitoring}"
    answer = {"success": requests or _requests(1000), "accuracy": accuracy}
    return [Measured(q, answer[q.metric or ""]) for q in due]


def _condition(d: Decision) -> Any:
    return next(c for c in d.status.conditions if c.type is ConditionType.MODEL_HEALTHY)


def _promoted(on_degraded: str = "alert") -> World:
    """1.0.0 Healthy, then 2.0.0 rolled out and promoted at t=10."""
    w = World.of(_md(on_degraded))
    w.settle(at(0))
    w.with_spec(spec__model__version="2.0.0")
    d = w.settle(at(10))
    assert d.status.phase is Phase.HEALTHY and d.status.stable_version == "2.0.0"
    return w


def test_monitoring_watches_the_promoted_stable_and_keeps_the_one_before_it() -> None:
    w = _promoted()
    status = w.md.status
    assert status.previous_stable is not None and status.previous_stable.model.version == "1.0.0"
    assert status.monitoring is not None and status.monitoring.revision == status.stable_revision
    d = w.plan(at(10))
    assert _condition(d).status == "Unknown"
    assert monitoring.due_queries(w.md, at(30)) == []  # one interval after watching began
    assert d.requeue_after is not None and d.requeue_after <= timedelta(seconds=60)


def test_two_failing_looks_in_a_row_make_the_model_degraded_with_an_event_and_a_webhook() -> None:
    w = _promoted()
    d = w.settle(at(70), measurements=_look(w, 70, _labels(500, 480)))
    assert _condition(d).status == "True" and _condition(d).reason is Reason.MODEL_HEALTHY
    d = w.settle(at(130), measurements=_look(w, 130, _labels(500, 400)))  # 80 %: one failing look
    assert _condition(d).status == "True"
    assert w.md.status.monitoring is not None and w.md.status.monitoring.failing == 1
    d = w.step(at(190), measurements=_look(w, 190, _labels(500, 400)))
    cond = _condition(d)
    assert (cond.status, cond.reason) == ("False", Reason.MODEL_DEGRADED)
    assert "accuracy: accuracy 80.0 % over 500 labels" in cond.message
    assert any(n.reason is Reason.MODEL_DEGRADED and "2.0.0 degraded" in n.message for n in d.notes)
    assert [c.key.type for c in d.webhook_calls] == [WebhookType.MODEL_DEGRADED]
    assert d.status.phase is Phase.HEALTHY  # alert: it keeps serving
    d = w.step(at(250), measurements=_look(w, 250, _labels(500, 480)))
    assert _condition(d).status == "True"
    assert any(n.reason is Reason.MODEL_HEALTHY for n in d.notes)
    assert [c.key.type for c in d.webhook_calls] == [WebhookType.MODEL_DEGRADED]  # recovered


def test_on_degraded_rollback_returns_to_the_previous_stable_as_a_rollback() -> None:
    w = _promoted("rollback")
    w.settle(at(70), measurements=_look(w, 70, _labels(500, 400)))
    d = w.settle(at(130), measurements=_look(w, 130, _labels(500, 400)))
    assert d.status.phase is Phase.ROLLED_BACK
    assert d.status.stable_version == "1.0.0"
    entry = w.md.status.history[0]
    assert (entry.version, entry.outcome) == ("2.0.0", Reason.ROLLED_BACK)
    assert entry.message.startswith("2.0.0 degraded after promotion, back to 1.0.0: accuracy:")
    stable = next(m for m in d.desired if m["metadata"]["name"] == "iris-stable")
    assert "1.0.0" in str(stable["spec"]["template"])
    # The degraded version is not rolled out again by itself; the old stable is watched, and with
    # nothing kept before it, a degradation now only alerts.
    assert w.md.status.previous_stable is None
    d = w.settle(at(140))
    assert d.status.phase is Phase.ROLLED_BACK and d.status.stable_version == "1.0.0"


def test_client_errors_are_the_callers_and_a_look_with_too_few_labels_is_no_verdict() -> None:
    w = _promoted()
    due = monitoring.due_queries(w.md, at(70))
    success = next(q for q in due if q.metric == "success")
    assert 'outcome!="client_error"' in success.promql and 'version="2.0.0"' in success.promql
    assert success.promql.startswith("label_replace(sum by (track, outcome)")
    d = w.settle(at(70), measurements=_look(w, 70, _labels(10, 8)))  # 80 % of 10: not shown
    assert _condition(d).status == "True"  # success rate passed; accuracy inconclusive
    mon = w.md.status.monitoring
    assert mon is not None and [m.verdict for m in mon.metrics] == ["Successful", "Inconclusive"]


def test_the_same_look_handed_over_twice_counts_once() -> None:
    w = _promoted()
    look = _look(w, 70, _labels(500, 400))
    w.settle(at(70), measurements=look)
    w.settle(at(71), measurements=look)
    assert w.md.status.monitoring is not None and w.md.status.monitoring.looks == 1


def test_monitoring_refuses_checks_it_cannot_take_alone() -> None:
    with pytest.raises(ValidationError, match="the shadow checks need a second track"):
        Monitoring.model_validate(
            {"metrics": [{"name": "d", "builtin": "predictionAgreement", "threshold": {"min": 99}}]}
        )
    with pytest.raises(ValidationError, match="no second track to compare with"):
        Monitoring.model_validate(
            {"metrics": [{"name": "s", "builtin": "successRate", "threshold": {"min": 99}, "compare": {}}]}
        )


@pytest.mark.parametrize("failure_limit", [0, 1])
def test_a_model_exactly_at_its_thresholds_is_flagged_at_the_stated_rate(failure_limit: int) -> None:
    """The stated error rate: two checks on a model sitting exactly at both thresholds (99 %
    success, 90 % accuracy), 10 000 non-overlapping looks of 2 000 requests and 200 labels. A look
    fails with probability at most 0.02 (0.01 a check); degraded needs failureLimit + 1 failing
    looks in a row: at most 2 % of looks with failureLimit 0, at most 0.04 % with 1."""
    spec = Monitoring.model_validate({**MONITOR, "failureLimit": failure_limit})
    rng = np.random.default_rng(11)
    status = MonitoringStatus(revision="r", started_at=at(0))
    degraded_looks = 0
    for k in range(10_000):
        ok = float(rng.binomial(2000, 0.99))
        correct = float(rng.binomial(200, 0.9))
        answers = {"success": _requests(ok, 2000 - ok), "accuracy": _labels(200, correct)}
        by = {"success": ("track", "outcome"), "accuracy": ("track", "series")}
        look = [
            Measured(monitoring.QueryRequest(n, k, monitoring.STEP, "q", at(60 * k), by[n]), answers[n])
            for n in ("success", "accuracy")
        ]
        status = monitoring.record(spec, status, look)
        degraded_looks += status.healthy is False
    bound = 0.02 if failure_limit == 0 else 0.0004
    assert degraded_looks / 10_000 <= bound + 0.5 * bound
    assert status.looks == 10_000


def test_a_custom_query_is_run_for_the_stable_track() -> None:
    w = World.of(
        md_of(
            {"canary": {"steps": [{"setWeight": 50}]}},
            monitoring={
                "metrics": [
                    {
                        "name": "q",
                        "query": 'sum(x{track="{{track}}",version="{{version}}"})',
                        "threshold": {"max": 1},
                    }
                ]
            },
        )
    )
    w.settle(at(0))
    (q,) = monitoring.due_queries(w.md, at(300))
    assert 'track="stable",version="1.0.0"' in q.promql
    d = w.settle(at(300), measurements=[Measured(q, Value(5))])
    assert _condition(d).status == "Unknown"  # one failing look is tolerated (failureLimit 1)
    assert w.md.status.monitoring is not None and w.md.status.monitoring.failing == 1


def test_prediction_drift_after_promotion_is_judged_against_the_reference() -> None:
    check = MetricCheck.model_validate({"name": "p", "builtin": "predictionDrift", "threshold": {"max": 0.2}})
    reference = {("reference", c): 1 / 3 for c in ("setosa", "versicolor", "virginica")}
    like = Counts(
        {
            **reference,
            ("candidate", "setosa"): 330,
            ("candidate", "versicolor"): 340,
            ("candidate", "virginica"): 330,
        }
    )
    assert monitoring.judge_predictions_against_reference(check, like).outcome is Outcome.PASS
    moved = Counts(
        {
            **reference,
            ("candidate", "setosa"): 30,
            ("candidate", "versicolor"): 70,
            ("candidate", "virginica"): 900,
        }
    )
    judged = monitoring.judge_predictions_against_reference(check, moved)
    assert judged.outcome is Outcome.FAIL
    assert (
        judged.reason.startswith("class shares PSI ")
        and "most moved: virginica 90.0 % vs 33.3 %" in judged.reason
    )
    few = Counts({**reference, ("candidate", "virginica"): 4})  # a PSI far above 0.2, but 4 predictions
    assert monitoring.judge_predictions_against_reference(check, few).outcome is Outcome.PASS
    none = monitoring.judge_predictions_against_reference(check, Counts({("candidate", "setosa"): 10}))
    assert none.outcome is Outcome.INCONCLUSIVE and "needs a classifier's spec.model.reference" in none.reason


def test_the_prediction_drift_query_reads_the_stables_classes_and_the_reference_shares() -> None:
    w = World.of(
        md_of(
            {"canary": {"steps": [{"setWeight": 50}]}},
            monitoring={"metrics": [{"name": "p", "builtin": "predictionDrift", "threshold": {"max": 0.2}}]},
        )
    )
    w.settle(at(0))
    (q,) = monitoring.due_queries(w.md, at(300))
    assert q.by == ("track", "class")
    assert (
        "rollwise_prediction_value_count{" in q.promql and "rollwise_prediction_reference_share{" in q.promql
    )
    assert q.promql.endswith(', "track", "candidate", "track", "stable")')
    shares = {("reference", c): 1 / 3 for c in ("setosa", "versicolor", "virginica")}
    d = w.settle(at(300), measurements=[Measured(q, Counts({**shares, ("candidate", "virginica"): 500}))])
    mon = w.md.status.monitoring
    assert mon is not None and mon.metrics[0].message.startswith("class shares PSI"), mon
    assert mon.metrics[0].verdict == "Failed" and d.status.monitoring is not None
