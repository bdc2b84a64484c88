"""The rollout state machine, scenario by scenario, through a perfect world (rollout_world.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rollwise.api.v1alpha1 import ConditionType, ModelDeployment, Phase, Reason, Verdict
from rollwise.kube.reconcile import WebhookAnswers
from rollwise.plan.analysis import Measured, due_queries
from rollwise.plan.decision import Decision
from rollwise.plan.machine import decide
from rollwise.plan.measurement import Measurement, NoData, QueryError, Value
from rollwise.plan.observed import WebhookResult
from rollwise.routers import ReplicasRouter

from tests.unit.manifests import base
from tests.unit.rollout_world import IMAGE, UID, World, at, http_route, ingress, virtual_service

PLENTY = Value(500)
"""Requests the candidate served in an interval: well above minSampleCount."""
METRICS = {
    "metrics": [{"name": "ok", "builtin": "successRate", "threshold": {"min": 99}}],
    "intervalSeconds": 10,
    "count": 2,
}


def md_of(rollout: dict[str, Any], *, replicas: int = 4, **spec: Any) -> ModelDeployment:
    doc = base()
    doc["metadata"]["uid"] = UID
    doc["metadata"]["generation"] = 1
    doc["spec"]["runtime"] = {"replicas": replicas}
    doc["spec"]["rollout"] = rollout
    for k, v in spec.items():
        doc["spec"][k] = v
    return ModelDeployment.model_validate(doc)


def started(md: ModelDeployment, *user: Any, at_seconds: float = 1) -> World:
    """Healthy at t=0, then version 2.0.0 applied and planned at t=`at_seconds`."""
    w = World.of(md, *user)
    assert w.settle(at(0)).status.phase is Phase.HEALTHY
    w.with_spec(spec__model__version="2.0.0")
    w.settle(at(at_seconds))
    return w


def replicas(d: Decision) -> dict[str, Any]:
    return {m["metadata"]["name"]: m["spec"].get("replicas") for m in d.desired if m["kind"] == "Deployment"}


def obj(d: Decision, kind: str, name: str) -> dict[str, Any]:
    return next(m for m in d.desired if m["kind"] == kind and m["metadata"]["name"] == name)


def args(d: Decision, track: str) -> list[str]:
    return obj(d, "Deployment", f"iris-{track}")["spec"]["template"]["spec"]["containers"][0]["args"]


def answers(w: World, seconds: float, metric: Measurement, samples: Measurement = PLENTY) -> list[Measured]:
    return [Measured(q, samples if q.metric is None else metric) for q in due_queries(w.md, at(seconds))]


def weights(refs: list[dict[str, Any]]) -> list[int]:
    return [r["weight"] for r in refs]


def canary_weight(ingress: dict[str, Any]) -> str:
    return str(ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"])


def condition(d: Decision, kind: ConditionType) -> Any:
    return next(c for c in d.status.conditions if c.type == kind)


# --------------------------------------------------------------------------------------------


def test_a_good_canary_walks_every_step_and_is_promoted() -> None:
    w = started(
        md_of(
            {
                "canary": {"steps": [{"setWeight": 10}, {"analysis": {}}, {"setWeight": 50}]},
                "analysis": METRICS,
            }
        )
    )
    d = w.settle(at(2))
    assert (d.status.phase, d.status.current_step, d.status.weight) == (Phase.PROGRESSING, 1, 10)
    assert replicas(d) == {"iris-stable": 3, "iris-candidate": 1}
    assert due_queries(w.md, at(5)) == []  # first measurement waits a full interval
    d = w.settle(at(12), measurements=answers(w, 12, Value(100)))
    assert d.status.analysis is not None and d.status.analysis.metrics[0].successful == 1
    d = w.settle(at(22), measurements=answers(w, 22, Value(99.5)))
    # Analysis passed, setWeight 50, then promotion, then healthy: all in a perfect world.
    assert d.status.phase is Phase.HEALTHY
    assert d.status.stable_version == "2.0.0" and d.status.candidate_version is None
    assert d.status.weight == 0
    assert replicas(d) == {"iris-stable": 4}
    assert "iris-candidate" not in w.children.get(("Deployment", "iris-candidate"), {}).get(
        "metadata", {}
    ).get("name", "")
    assert w.md.status.history[0].outcome is Reason.PROMOTED
    assert condition(d, ConditionType.READY).status == "True"


def test_planning_again_from_our_own_status_asks_for_nothing() -> None:
    w = started(md_of({"canary": {"steps": [{"setWeight": 10}, {"pause": {"durationSeconds": 60}}]}}))
    first = w.plan(at(5))
    w.apply(first)
    again = w.plan(at(5))
    assert again.status == first.status and again.desired == first.desired and again.delete == ()


@pytest.mark.parametrize(
    ("metric", "samples", "phase", "reason"),
    [
        pytest.param(
            Value(80),
            Value(500),
            Phase.ROLLED_BACK,
            Reason.ANALYSIS_FAILED,
            id="a low success rate rolls back",
        ),
        pytest.param(
            QueryError("connection refused"),
            Value(500),
            Phase.ROLLED_BACK,
            Reason.ANALYSIS_FAILED,
            id="a Prometheus error is a failure, never a pass",
        ),
        pytest.param(
            Value(100),
            QueryError("timed out"),
            Phase.ROLLED_BACK,
            Reason.ANALYSIS_FAILED,
            id="a failed request-count query fails every metric",
        ),
        pytest.param(
            NoData(),
            Value(500),
            Phase.PAUSED,
            Reason.ANALYSIS_INCONCLUSIVE,
            id="no data pauses for a human, never promotes",
        ),
        pytest.param(
            Value(float("nan")), Value(500), Phase.PAUSED, Reason.ANALYSIS_INCONCLUSIVE, id="NaN is no data"
        ),
    ],
)
def test_an_analysis_that_does_not_pass_never_promotes(
    metric: Measurement, samples: Measurement, phase: Phase, reason: Reason
) -> None:
    w = started(md_of({"canary": {"steps": [{"setWeight": 10}, {"analysis": {}}]}, "analysis": METRICS}))
    d = w.settle(at(12), measurements=answers(w, 12, metric, samples))
    assert d.status.phase is phase
    assert d.status.stable_version == "1.0.0"
    assert (
        condition(
            d, ConditionType.STALLED if phase is Phase.ROLLED_BACK else ConditionType.RECONCILING
        ).reason
        is reason
    )
    if phase is Phase.ROLLED_BACK:
        assert d.status.weight == 0
        assert replicas(d) == {"iris-stable": 4, "iris-candidate": 0}
        assert w.md.status.history[0].outcome is Reason.ROLLED_BACK
        assert "analysis failed" in w.md.status.history[0].message


def test_too_few_requests_are_looked_at_again_count_times_then_pause_however_good_the_value() -> None:
    w = started(md_of({"canary": {"steps": [{"setWeight": 10}, {"analysis": {}}]}, "analysis": METRICS}))
    phases = []
    for t in (12, 22, 32):
        d = w.settle(at(t), measurements=answers(w, t, Value(100), Value(3)))
        phases.append(d.status.phase)
    assert phases == [Phase.PROGRESSING, Phase.PROGRESSING, Phase.PAUSED]
    assert condition(d, ConditionType.RECONCILING).reason is Reason.ANALYSIS_INCONCLUSIVE
    assert d.status.stable_version == "1.0.0"


def test_a_rollback_is_recorded_in_status_conditions_history_and_events() -> None:
    w = started(md_of({"canary": {"steps": [{"setWeight": 10}, {"analysis": {}}]}, "analysis": METRICS}))
    d = w.step(at(12), measurements=answers(w, 12, Value(42)))
    assert d.status.phase is Phase.ROLLING_BACK
    assert "ok: 1 failed measurement(s), failureLimit 0 (last: 42 is outside >= 99)" in d.status.message
    assert any(n.reason is Reason.ANALYSIS_FAILED and n.type == "Warning" for n in d.notes)
    assert d.status.analysis is not None and d.status.analysis.verdict is Verdict.FAILED
    d = w.settle(at(13))
    assert d.status.phase is Phase.ROLLED_BACK


def test_a_crash_looping_candidate_rolls_back_at_the_progress_deadline() -> None:
    md = md_of({"canary": {"steps": [{"setWeight": 10}]}, "progressDeadlineSeconds": 60})
    w = World.of(md)
    w.settle(at(0))
    w.crash_candidate = True
    w.with_spec(spec__model__version="2.0.0")
    d = w.settle(at(1))
    assert d.status.phase is Phase.PROGRESSING and d.status.current_step == 0
    # It looks again by the deadline at the latest, even if no event comes (pods crash-looping
    # change nothing in their Deployment).
    assert d.requeue_after is not None and d.requeue_after.total_seconds() <= 60
    assert w.settle(at(60)).status.phase is Phase.PROGRESSING
    d = w.settle(at(61))
    assert d.status.phase is Phase.ROLLED_BACK
    assert condition(d, ConditionType.STALLED).reason is Reason.PROGRESS_DEADLINE_EXCEEDED
    assert "progressDeadlineSeconds 60" in d.status.message and "CrashLoopBackOff" in d.status.message
    assert replicas(d)["iris-candidate"] == 0


def test_a_new_revision_during_a_rollout_supersedes_the_candidate() -> None:
    w = started(md_of({"canary": {"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}]}}))
    assert w.md.status.phase is Phase.PAUSED and w.md.status.current_step == 1
    w.with_spec(spec__model__version="3.0.0")
    d = w.settle(at(5))
    assert d.status.candidate_version == "3.0.0"
    assert (d.status.phase, d.status.current_step) == (Phase.PAUSED, 1)
    assert w.md.status.history[0].outcome is Reason.SUPERSEDED
    assert w.md.status.history[0].version == "2.0.0"
    assert d.status.stable_version == "1.0.0"


def test_going_back_to_the_stable_revision_removes_the_candidate() -> None:
    w = started(md_of({"canary": {"steps": [{"setWeight": 10}, {"pause": {}}]}}))
    w.with_spec(spec__model__version="1.0.0")
    w.step(at(5))
    d = w.settle(at(5))
    assert d.status.phase is Phase.HEALTHY and d.status.candidate_version is None
    assert replicas(d) == {"iris-stable": 4}
    assert ("Deployment", "iris-candidate") not in w.children


# Manual gates --------------------------------------------------------------------------------

PAUSED_CANARY = {"canary": {"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]}}


@pytest.mark.parametrize(
    ("action", "phase", "step", "weight"),
    [
        pytest.param("resume:1", Phase.PAUSED, 3, 50, id="resume passes an indefinite pause step"),
        pytest.param("promote:1", Phase.PAUSED, 3, 50, id="promote skips the current step"),
        pytest.param("promote-full:1", Phase.HEALTHY, None, 0, id="promote-full goes straight to promotion"),
        pytest.param("abort:1", Phase.ROLLED_BACK, 1, 0, id="abort returns all traffic to stable"),
        pytest.param("retry:1", Phase.PAUSED, 1, 10, id="retry does nothing while a rollout runs"),
        pytest.param("pause:1", Phase.PAUSED, 1, 10, id="pause while already paused changes nothing"),
        pytest.param("dance:1", Phase.PAUSED, 1, 10, id="an unknown verb is reported and ignored"),
    ],
)
def test_manual_gates(action: str, phase: Phase, step: int | None, weight: int) -> None:
    w = started(md_of(PAUSED_CANARY))
    w.annotate(action)
    d = w.settle(at(5))
    assert (d.status.phase, d.status.current_step, d.status.weight) == (phase, step, weight)
    assert d.status.last_action == action


def test_an_action_is_applied_once_and_a_new_nonce_applies_it_again() -> None:
    w = started(md_of(PAUSED_CANARY))
    w.annotate("promote:a")
    assert w.settle(at(5)).status.current_step == 3
    # The annotation stays: planning again must not skip another step.
    assert w.settle(at(6)).status.current_step == 3
    w.annotate("promote:b")
    assert w.settle(at(7)).status.phase is Phase.HEALTHY


def test_unknown_verbs_are_explained_in_an_event() -> None:
    w = started(md_of(PAUSED_CANARY))
    w.annotate("dance")
    d = w.step(at(5))
    assert any("'dance' is not an action; use one of pause, resume" in n.message for n in d.notes)


def test_pause_then_resume_restarts_a_timed_step_clock() -> None:
    w = started(
        md_of(
            {"canary": {"steps": [{"setWeight": 10}, {"pause": {"durationSeconds": 60}}, {"setWeight": 50}]}}
        )
    )
    w.annotate("pause:1")
    assert w.settle(at(10)).status.phase is Phase.PAUSED
    assert w.settle(at(100)).status.current_step == 1  # paused: the timer does not advance
    w.annotate("resume:1")
    d = w.settle(at(100))
    assert (d.status.phase, d.status.current_step) == (Phase.PROGRESSING, 1)
    assert w.settle(at(159)).status.current_step == 1
    assert w.settle(at(160)).status.phase is Phase.HEALTHY


def test_retry_restarts_a_rolled_back_candidate() -> None:
    w = started(md_of(PAUSED_CANARY))
    w.annotate("abort:1")
    assert w.settle(at(5)).status.phase is Phase.ROLLED_BACK
    w.annotate("retry:1")
    d = w.settle(at(6))
    assert (d.status.phase, d.status.current_step, d.status.candidate_version) == (Phase.PAUSED, 1, "2.0.0")


def test_a_rolled_back_candidate_stays_rolled_back_until_the_spec_changes() -> None:
    w = started(md_of(PAUSED_CANARY))
    w.annotate("abort:1")
    w.settle(at(5))
    assert w.settle(at(500)).status.phase is Phase.ROLLED_BACK
    w.with_spec(spec__model__version="3.0.0")
    assert w.settle(at(501)).status.phase is Phase.PAUSED


def test_an_operator_restart_resumes_at_the_same_step() -> None:
    w = started(
        md_of(
            {"canary": {"steps": [{"setWeight": 10}, {"pause": {"durationSeconds": 60}}, {"setWeight": 50}]}}
        )
    )
    before = w.md.status
    # A new operator: nothing in memory, only the resource's status and the live children.
    fresh = decide(
        w.md, w.observed(), now=at(30), owner_uid=UID, serving_image=IMAGE, router=ReplicasRouter()
    )
    assert (fresh.status.current_step, fresh.status.step_started_at) == (
        before.current_step,
        before.step_started_at,
    )
    assert (
        fresh.status
        == decide(
            w.md, w.observed(), now=at(30), owner_uid=UID, serving_image=IMAGE, router=ReplicasRouter()
        ).status
    )


# Strategies ----------------------------------------------------------------------------------


def test_blue_green_previews_switches_and_keeps_the_old_stable_for_the_delay() -> None:
    w = started(md_of({"blueGreen": {"autoPromotionSeconds": 30, "scaleDownDelaySeconds": 60}}))
    d = w.settle(at(2))
    assert replicas(d) == {"iris-stable": 4, "iris-candidate": 4}
    assert obj(d, "Service", "iris")["spec"]["selector"]["rollwise.dev/track"] == "stable"
    assert d.status.current_step == 1  # waiting out autoPromotionSeconds
    d = w.settle(at(40))
    assert (d.status.current_step, d.status.weight) == (2, 100)
    assert obj(d, "Service", "iris")["spec"]["selector"]["rollwise.dev/track"] == "candidate"
    assert replicas(d) == {"iris-stable": 4, "iris-candidate": 4}  # blue kept: instant rollback
    assert w.settle(at(99)).status.phase is Phase.PROGRESSING
    w.annotate("abort:1")
    d = w.settle(at(99))
    assert d.status.phase is Phase.ROLLED_BACK
    assert obj(d, "Service", "iris")["spec"]["selector"]["rollwise.dev/track"] == "stable"


def test_blue_green_promotes_once_the_delay_passed() -> None:
    w = started(
        md_of({"blueGreen": {"autoPromotionSeconds": 0, "scaleDownDelaySeconds": 60, "previewReplicas": 2}})
    )
    assert replicas(w.plan(at(1))) == {"iris-stable": 4, "iris-candidate": 4}
    d = w.settle(at(62))
    assert d.status.phase is Phase.HEALTHY and d.status.stable_version == "2.0.0"


def test_blue_green_preview_uses_preview_replicas() -> None:
    md = md_of({"blueGreen": {"previewReplicas": 2}})
    w = World.of(md)
    w.settle(at(0))
    w.with_spec(spec__model__version="2.0.0")
    d = w.step(at(1))
    assert replicas(d) == {"iris-stable": 4, "iris-candidate": 2}


def test_a_user_hash_ab_test_forwards_a_share_of_users_from_stable_pods() -> None:
    w = started(md_of({"abTest": {"userHash": {"header": "x-user-id", "weight": 20}}}))
    d = w.settle(at(2))
    assert d.status.phase is Phase.PAUSED and d.status.weight == 20
    assert args(d, "stable")[-6:] == [
        "--hash-header", "x-user-id", "--hash-range", "0-19", "--forward-url",
        "http://iris-candidate.ml.svc.cluster.local",
    ]  # fmt: skip
    assert obj(d, "Service", "iris")["spec"]["selector"]["rollwise.dev/track"] == "stable"
    assert replicas(d) == {"iris-stable": 4, "iris-candidate": 1}


def test_shadow_mirrors_from_stable_pods_to_a_full_size_candidate() -> None:
    w = started(md_of({"shadow": {"durationSeconds": 60}}))
    d = w.settle(at(2))
    assert d.status.weight == 0 and d.split is not None and d.split.mirror
    assert args(d, "stable")[-2:] == ["--mirror-url", "http://iris-candidate.ml.svc.cluster.local"]
    assert replicas(d) == {"iris-stable": 4, "iris-candidate": 4}
    d = w.settle(at(70))
    assert d.status.phase is Phase.HEALTHY
    assert "--mirror-url" not in args(d, "stable")


def test_a_header_ab_test_without_a_proxy_forwards_matching_requests_from_stable_pods() -> None:
    match = [{"header": {"name": "x-variant", "value": "b"}}, {"cookie": {"name": "beta", "value": "1"}}]
    w = started(md_of({"abTest": {"match": match}}))
    d = w.settle(at(2))
    assert d.status.phase is Phase.PAUSED and d.status.weight == 0
    assert args(d, "stable")[-4:] == [
        "--forward-match",
        '[{"header":{"name":"x-variant","value":"b"}},{"cookie":{"name":"beta","value":"1"}}]',
        "--forward-url",
        "http://iris-candidate.ml.svc.cluster.local",
    ]
    assert obj(d, "Service", "iris")["spec"]["selector"]["rollwise.dev/track"] == "stable"
    assert replicas(d) == {"iris-stable": 4, "iris-candidate": 1}
    assert w.plan(at(3)).desired == d.desired  # the flags read back as routed: no further change
    w.annotate("promote-full:1")
    d = w.settle(at(4))
    assert d.status.phase is Phase.HEALTHY and d.status.stable_version == "2.0.0"
    assert "--forward-match" not in args(d, "stable")


@pytest.mark.parametrize(
    ("traffic", "user", "check"),
    [
        pytest.param(
            {"provider": "gatewayAPI", "gatewayAPI": {"httpRoute": "web"}},
            http_route(),
            lambda d: weights(obj(d, "HTTPRoute", "web")["spec"]["rules"][1]["backendRefs"]) == [90, 10],
            id="gatewayAPI weights the HTTPRoute's backends",
        ),
        pytest.param(
            {"provider": "istio", "istio": {"virtualService": "web", "route": "infer"}},
            virtual_service(),
            lambda d: weights(obj(d, "VirtualService", "web")["spec"]["http"][1]["route"]) == [90, 10],
            id="istio weights the VirtualService route",
        ),
        pytest.param(
            {"provider": "nginx", "nginx": {"ingress": "web"}},
            ingress(),
            lambda d: canary_weight(obj(d, "Ingress", "iris-candidate")) == "10",
            id="nginx sets the canary Ingress weight",
        ),
    ],
)
def test_proxy_routers_keep_stable_full_and_weight_the_route(
    traffic: dict[str, Any], user: Any, check: Callable[[Decision], bool]
) -> None:
    w = started(md_of({"canary": {"steps": [{"setWeight": 10}, {"pause": {}}]}, "traffic": traffic}), user)
    d = w.settle(at(2))
    assert (d.status.phase, d.status.weight) == (Phase.PAUSED, 10)
    assert replicas(d) == {"iris-stable": 4, "iris-candidate": 1}
    assert check(d)


@pytest.mark.parametrize(
    ("traffic", "user", "candidate_weight"),
    [
        pytest.param(
            {"provider": "gatewayAPI", "gatewayAPI": {"httpRoute": "web"}},
            http_route(),
            lambda d: weights(obj(d, "HTTPRoute", "web")["spec"]["rules"][1]["backendRefs"])[1],
            id="gatewayAPI",
        ),
        pytest.param(
            {"provider": "nginx", "nginx": {"ingress": "web"}},
            ingress(),
            lambda d: int(canary_weight(obj(d, "Ingress", "iris-candidate")) or 0),
            id="nginx",
        ),
    ],
)
def test_a_proxy_router_sends_nothing_to_a_candidate_until_it_is_available(
    traffic: dict[str, Any], user: Any, candidate_weight: Callable[[Decision], int]
) -> None:
    """A proxy answers a share routed to a Service without endpoints with errors (Traefik: 503),
    so the first step's weight waits for the candidate to be available (after minReadySeconds)."""
    md = md_of({"canary": {"steps": [{"setWeight": 10}, {"pause": {}}]}, "traffic": traffic})
    w = World.of(md, user)
    assert w.settle(at(0)).status.phase is Phase.HEALTHY
    w.crash_candidate = True
    w.with_spec(spec__model__version="2.0.0")
    d = w.settle(at(1))
    assert d.status.phase is Phase.PROGRESSING and d.status.weight == 0
    assert candidate_weight(d) == 0
    w.crash_candidate = False
    d = w.settle(at(2))
    assert (d.status.phase, d.status.weight) == (Phase.PAUSED, 10)
    assert candidate_weight(d) == 10


def test_a_missing_http_route_rolls_back_at_the_deadline_naming_the_route() -> None:
    traffic = {"provider": "gatewayAPI", "gatewayAPI": {"httpRoute": "web"}}
    w = started(
        md_of({"canary": {"steps": [{"setWeight": 10}]}, "traffic": traffic, "progressDeadlineSeconds": 60})
    )
    d = w.settle(at(60))
    assert d.status.phase is Phase.PROGRESSING
    assert d.status.message == (
        "step 1/1: setWeight 10; waiting for the traffic router: "
        "HTTPRoute web not found in namespace ml; create it with a rule routing to Service iris"
    )  # what a human reads while it waits, not only at the rollback
    d = w.settle(at(61))
    assert d.status.phase is Phase.ROLLED_BACK
    assert (
        "HTTPRoute web not found in namespace ml; create it with a rule routing to Service iris"
        in d.status.message
    )


def test_autoscaled_tracks_get_hpas_narrowed_to_the_step() -> None:
    md = md_of(
        {
            "canary": {"steps": [{"setWeight": 25}, {"pause": {}}]},
            "traffic": {"provider": "istio", "istio": {"virtualService": "web"}},
        },
        runtime={
            "autoscaling": {
                "minReplicas": 2,
                "maxReplicas": 8,
                "metric": {"name": "rps", "targetAverageValue": "10"},
            }
        },
    )
    w = started(md, virtual_service())
    d = w.settle(at(2))
    assert replicas(d) == {"iris-stable": None, "iris-candidate": None}  # the HPAs own the counts
    hpa = {
        m["metadata"]["name"]: (m["spec"]["minReplicas"], m["spec"]["maxReplicas"])
        for m in d.desired
        if m["kind"] == "HorizontalPodAutoscaler"
    }
    assert hpa == {"iris-stable": (2, 8), "iris-candidate": (1, 2)}
    w.annotate("abort:1")
    d = w.settle(at(3))
    assert replicas(d) == {"iris-stable": None, "iris-candidate": 0}
    assert all(
        m["metadata"]["name"] != "iris-candidate" for m in d.desired if m["kind"] == "HorizontalPodAutoscaler"
    )
    assert ("HorizontalPodAutoscaler", "iris-candidate") not in w.children


# Webhooks ------------------------------------------------------------------------------------


def hooks(*kinds: str) -> list[dict[str, Any]]:
    return [{"name": k.lower(), "type": k, "url": f"http://hooks.example/{k}"} for k in kinds]


def test_a_step_webhook_is_asked_before_each_step_and_a_refusal_rolls_back() -> None:
    md = md_of({"canary": {"steps": [{"setWeight": 10}, {"setWeight": 50}]}, "webhooks": hooks("step")})
    w = World.of(md)
    w.settle(at(0))
    w.with_spec(spec__model__version="2.0.0")
    d = w.settle(at(1))
    assert d.status.current_step is None  # gated before the first step
    [call] = d.webhook_calls
    assert (call.key.type, call.key.step) == ("step", 0)
    d = w.settle(at(2), webhooks=[WebhookResult(call.key, ok=True)])
    assert (d.status.current_step, d.status.weight) == (0, 10)
    [call] = d.webhook_calls
    assert call.key.step == 1
    d = w.settle(at(3), webhooks=[WebhookResult(call.key, ok=False, detail="HTTP 503")])
    assert d.status.phase is Phase.ROLLED_BACK
    assert "webhook step (step) refused: HTTP 503" in d.status.message


def test_a_passed_gate_is_kept_in_status_so_a_restarted_operator_does_not_ask_again() -> None:
    md = md_of(
        {"canary": {"steps": [{"setWeight": 10}, {"pause": {}}]}, "webhooks": hooks("preRollout", "step")}
    )
    w = World.of(md)
    w.settle(at(0))
    w.with_spec(spec__model__version="2.0.0")
    calls = w.settle(at(1)).webhook_calls
    assert sorted(c.key.type for c in calls) == ["preRollout", "step"]
    answers = [WebhookResult(c.key, ok=True) for c in calls]
    d = w.settle(at(2), webhooks=answers)
    assert d.status.current_step == 0
    kept = {(g.name, g.type, g.step) for g in d.status.passed_gates}
    assert kept == {("prerollout", "preRollout", 0), ("step", "step", 0)}
    # A restarted operator has no answers in memory: the I/O layer seeds them from the status.
    memory = WebhookAnswers()
    seeded = memory.for_pass(d.status.candidate_revision, d.status.passed_gates)
    assert {r.key for r in seeded} == {c.key for c in calls}
    again = w.settle(at(3), webhooks=list(seeded))
    assert (again.status.current_step, again.status.weight) == (0, 10)
    assert [c for c in again.webhook_calls if c.key.step == 0] == []  # nobody is asked twice
    # Answers about another candidate are not taken.
    assert WebhookAnswers().for_pass("other-revision", d.status.passed_gates) == ()


def test_confirm_promotion_refusal_pauses_until_it_answers_2xx() -> None:
    md = md_of({"canary": {"steps": [{"setWeight": 10}]}, "webhooks": hooks("confirmPromotion")})
    w = started(md)
    d = w.plan(at(2))
    [call] = d.webhook_calls
    d = w.settle(at(3), webhooks=[WebhookResult(call.key, ok=False, detail="HTTP 403")])
    assert (
        d.status.phase is Phase.PAUSED
        and condition(d, ConditionType.RECONCILING).reason is Reason.WEBHOOK_FAILED
    )
    assert [c.key.type for c in d.webhook_calls] == ["confirmPromotion"]
    d = w.settle(at(33), webhooks=[WebhookResult(call.key, ok=True)])
    assert d.status.phase is Phase.HEALTHY and d.status.stable_version == "2.0.0"


def test_a_rollback_webhook_answering_2xx_rolls_back() -> None:
    w = started(
        md_of({"canary": {"steps": [{"setWeight": 10}, {"pause": {}}]}, "webhooks": hooks("rollback")})
    )
    d = w.plan(at(2))
    [call] = [c for c in d.webhook_calls if c.key.type == "rollback"]
    d = w.settle(at(3), webhooks=[WebhookResult(call.key, ok=True, detail="HTTP 200")])
    assert d.status.phase is Phase.ROLLED_BACK


def test_post_rollout_webhooks_are_asked_once_when_a_rollout_ends() -> None:
    w = started(
        md_of({"canary": {"steps": [{"setWeight": 10}, {"pause": {}}]}, "webhooks": hooks("postRollout")})
    )
    w.annotate("abort:1")
    d = w.step(at(3))
    assert [c.key.type for c in d.webhook_calls] == ["postRollout"]
    assert [c.key.type for c in w.step(at(4)).webhook_calls] == []


def services(w: World) -> list[str]:
    return sorted(name for kind, name in w.children if kind == "Service")


def test_track_services_exist_while_a_candidate_does_behind_the_replicas_router() -> None:
    w = World.of(md_of({"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}))
    assert w.settle(at(0)).status.phase is Phase.HEALTHY
    assert services(w) == ["iris"]
    w.with_spec(spec__model__version="2.0.0")
    assert w.settle(at(1)).status.phase is Phase.PAUSED
    assert services(w) == ["iris", "iris-candidate", "iris-stable"]
    w.annotate("promote-full:1")
    d = w.settle(at(2))
    assert d.status.phase is Phase.HEALTHY and d.status.stable_version == "2.0.0"
    assert services(w) == ["iris"]
    assert w.plan(at(3)).delete == ()  # gone: nothing left to delete


def test_a_rolled_back_candidate_keeps_its_services_until_the_next_rollout() -> None:
    """The candidate's Deployment stays (at 0 pods) while rolled back; so does its Service."""
    w = World.of(md_of({"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}))
    w.settle(at(0))
    w.with_spec(spec__model__version="2.0.0")
    w.settle(at(1))
    w.annotate("abort:1")
    d = w.settle(at(2))
    assert d.status.phase is Phase.ROLLED_BACK
    assert replicas(d)["iris-candidate"] == 0
    assert services(w) == ["iris", "iris-candidate", "iris-stable"]


@pytest.mark.parametrize(
    ("traffic", "user"),
    [
        pytest.param(
            {"provider": "gatewayAPI", "gatewayAPI": {"httpRoute": "web"}}, http_route(), id="gatewayAPI"
        ),
        pytest.param(
            {"provider": "istio", "istio": {"virtualService": "web", "route": "infer"}},
            virtual_service(),
            id="istio",
        ),
        pytest.param({"provider": "nginx", "nginx": {"ingress": "web"}}, ingress(), id="nginx"),
    ],
)
def test_routes_that_name_the_track_services_keep_them_at_rest(traffic: dict[str, Any], user: Any) -> None:
    w = World.of(md_of({"canary": {"steps": [{"setWeight": 10}]}, "traffic": traffic}), user)
    assert w.settle(at(0)).status.phase is Phase.HEALTHY
    assert services(w) == ["iris", "iris-candidate", "iris-stable"]


def test_inconclusive_policy_proceed_goes_on_to_the_next_step() -> None:
    analysis = {**METRICS, "inconclusivePolicy": "proceed"}
    w = started(md_of({"canary": {"steps": [{"setWeight": 10}, {"analysis": {}}]}, "analysis": analysis}))
    d = w.step(at(12), measurements=answers(w, 12, NoData(), Value(500)))
    assert any("inconclusivePolicy proceed" in n.message and n.type == "Warning" for n in d.notes), d.notes
    d = w.settle(at(13))
    assert d.status.phase is Phase.HEALTHY and d.status.stable_version == "2.0.0"
