"""What must hold for any spec, any observed state and any sequence of events (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from rollwise.api.v1alpha1 import ModelDeployment, Phase, Rollout
from rollwise.plan.analysis import Measured, due_queries
from rollwise.plan.decision import Decision
from rollwise.plan.machine import decide
from rollwise.plan.measurement import Measurement, NoData, QueryError, Value
from rollwise.plan.split import TrafficSplit
from rollwise.plan.steps import rollout_steps, routing_at

from tests.unit.manifests import base
from tests.unit.rollout_world import IMAGE, UID, World, at

ANALYSIS = {
    "metrics": [{"name": "ok", "builtin": "successRate", "threshold": {"min": 99}}],
    "intervalSeconds": 10,
    "count": 2,
    "inconclusivePolicy": "pause",
}

weights_lists = st.lists(st.integers(1, 100), min_size=1, max_size=5, unique=True).map(sorted)


@st.composite
def canary_steps(draw: st.DrawFn) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for w in draw(weights_lists):
        steps.append({"setWeight": w})
        extra = draw(st.sampled_from(["none", "pause", "timed", "analysis"]))
        if extra == "pause":
            steps.append({"pause": {}})
        elif extra == "timed":
            steps.append({"pause": {"durationSeconds": draw(st.integers(1, 120))}})
        elif extra == "analysis":
            steps.append({"analysis": {}})
    return steps


@st.composite
def rollouts(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["canary", "blueGreen", "abTest", "shadow"]))
    analysis = draw(st.booleans())
    if kind == "canary":
        out: dict[str, Any] = {"canary": {"steps": draw(canary_steps())}}
        analysis = any("analysis" in s for s in out["canary"]["steps"]) or analysis
    elif kind == "blueGreen":
        bg: dict[str, Any] = {"scaleDownDelaySeconds": draw(st.integers(0, 60))}
        if draw(st.booleans()):
            bg["autoPromotionSeconds"] = draw(st.integers(0, 60))
        if analysis:
            bg["prePromotionAnalysis"] = {}
        out = {"blueGreen": bg}
    elif kind == "abTest":
        ab: dict[str, Any] = {"userHash": {"header": "x-user-id", "weight": draw(st.integers(1, 99))}}
        if draw(st.booleans()):
            ab["durationSeconds"] = draw(st.integers(1, 120))
        if analysis:
            ab["analysis"] = {}
        out = {"abTest": ab}
    else:
        sh: dict[str, Any] = {}
        if draw(st.booleans()):
            sh["durationSeconds"] = draw(st.integers(1, 120))
        if analysis:
            sh["analysis"] = {}
        out = {"shadow": sh}
    if analysis:
        out["analysis"] = ANALYSIS
    out["progressDeadlineSeconds"] = 60
    return out


def md_of(rollout: dict[str, Any], replicas: int = 4) -> ModelDeployment:
    doc = base()
    doc["metadata"]["uid"] = UID
    doc["spec"]["runtime"] = {"replicas": replicas}
    doc["spec"]["rollout"] = rollout
    return ModelDeployment.model_validate(doc)


def deployment_replicas(d: Decision) -> dict[str, Any]:
    return {m["metadata"]["name"]: m["spec"].get("replicas") for m in d.desired if m["kind"] == "Deployment"}


def stable_args(d: Decision) -> list[str]:
    dep = next(m for m in d.desired if m["metadata"]["name"] == "iris-stable" and m["kind"] == "Deployment")
    return list(dep["spec"]["template"]["spec"]["containers"][0]["args"])


def answers(w: World, seconds: float, metric: Measurement, samples: Measurement) -> list[Measured]:
    return [Measured(q, samples if q.metric is None else metric) for q in due_queries(w.md, at(seconds))]


def assert_stable_only(d: Decision) -> None:
    assert d.split == TrafficSplit.stable_only()
    assert d.status.weight == 0
    assert deployment_replicas(d).get("iris-candidate", 0) == 0
    assert "--mirror-url" not in stable_args(d) and "--hash-header" not in stable_args(d)


# --------------------------------------------------------------------------------------------


@given(rollouts(), st.data())
def test_every_split_sums_to_100_with_both_sides_in_range(
    rollout: dict[str, Any], data: st.DataObject
) -> None:
    steps = rollout_steps(Rollout.model_validate(rollout))
    i = data.draw(st.integers(-1, len(steps) - 1))
    split = routing_at(steps, i)
    assert 0 <= split.candidate <= 100 and 0 <= split.stable <= 100
    assert split.candidate + split.stable == 100


@settings(deadline=None)
@given(st.integers(2, 20), st.integers(1, 99))
def test_a_weight_strictly_between_0_and_100_keeps_a_pod_on_each_track(replicas: int, weight: int) -> None:
    w = World.of(md_of({"canary": {"steps": [{"setWeight": weight}, {"pause": {}}]}}, replicas))
    w.settle(at(0))
    w.with_spec(spec__model__version="2.0.0")
    d = w.settle(at(1))
    r = deployment_replicas(d)
    assert r["iris-stable"] >= 1 and r["iris-candidate"] >= 1
    assert r["iris-stable"] + r["iris-candidate"] == replicas


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rollouts(), st.integers(1, 400), st.sampled_from(["abort", "fail"]))
def test_abort_or_failed_analysis_at_any_point_leaves_stable_100_candidate_0_no_mirroring(
    rollout: dict[str, Any], seconds: int, how: str
) -> None:
    w = World.of(md_of(rollout))
    w.settle(at(0))
    w.with_spec(spec__model__version="2.0.0")
    t = 1
    while t < seconds:
        w.settle(at(t), measurements=answers(w, t, Value(100), Value(500)))
        t += 7
    if w.md.status.phase not in (Phase.PROGRESSING, Phase.PAUSED):
        return  # promoted (or still promoting) before the point we picked
    if how == "abort":
        w.annotate("abort:x")
        d = w.settle(at(t))
    else:
        d = w.settle(at(t), measurements=answers(w, t, Value(0), Value(500)))
        if not due_queries(w.md, at(t)) and w.md.status.phase is not Phase.ROLLED_BACK:
            return  # not at an analysis step with a measurement due
    if d.status.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK):
        assert_stable_only(d)
        assert d.status.stable_version == "1.0.0"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from([NoData(), QueryError("down"), Value(float("nan"))]), min_size=1, max_size=8),
    st.lists(st.sampled_from([NoData(), Value(3), Value(0)]), min_size=1, max_size=8),
)
def test_errors_and_no_data_never_promote(no_answers: list[Measurement], thin: list[Measurement]) -> None:
    """Neither a failed or empty query, nor a good value measured on too few requests, ever
    counts as a pass, however many of them there are and whatever the limits."""
    rollout = {
        "canary": {"steps": [{"setWeight": 10}, {"analysis": {}}]},
        "analysis": {**ANALYSIS, "inconclusiveLimit": 20, "failureLimit": 20, "count": 1},
    }
    for metrics, samples in ((no_answers, [Value(500)] * len(no_answers)), ([Value(100)] * len(thin), thin)):
        w = World.of(md_of(rollout))
        w.settle(at(0))
        w.with_spec(spec__model__version="2.0.0")
        w.settle(at(1))
        for i, (metric, sample) in enumerate(zip(metrics, samples, strict=True)):
            t = 11 + 10 * i
            w.settle(at(t), measurements=answers(w, t, metric, sample))
        assert w.md.status.stable_version == "1.0.0"
        assert all(h.outcome != "Promoted" for h in w.md.status.history)
        assert w.md.status.phase in (Phase.PROGRESSING, Phase.PAUSED, Phase.ROLLED_BACK)


# --------------------------------------------------------------------------------------------
# The machine under random time, verdicts, gates and new revisions


class Rollouts(RuleBasedStateMachine):
    """Drives one ModelDeployment through random events in a perfect world and checks, after
    each, what must always hold."""

    def __init__(self) -> None:
        super().__init__()
        self.world: World | None = None
        self.t = 0
        self.version = 1
        self.last: Decision | None = None
        self.previous_step: tuple[str | None, int | None] = (None, None)
        self.reset_allowed = False
        self.forced = False

    @property
    def w(self) -> World:
        assert self.world is not None
        return self.world

    @precondition(lambda self: self.world is None)
    @rule(rollout=rollouts(), crash=st.booleans())
    def create(self, rollout: dict[str, Any], crash: bool) -> None:
        self.world = World.of(md_of(rollout))
        self.last = self.world.settle(at(0))
        self.world.crash_candidate = crash

    @precondition(lambda self: self.world is not None)
    @rule(seconds=st.integers(1, 90))
    def time_passes(self, seconds: int) -> None:
        self.t += seconds
        self._pass()

    @precondition(lambda self: self.world is not None)
    @rule(value=st.sampled_from([Value(100), Value(50), NoData(), QueryError("down")]))
    def measure(self, value: Measurement) -> None:
        self.t += 10
        self._pass(measurements=answers(self.w, self.t, value, Value(500)))

    @precondition(lambda self: self.world is not None)
    @rule(verb=st.sampled_from(["pause", "resume", "promote", "promote-full", "abort", "retry"]))
    def act(self, verb: str) -> None:
        self.t += 1
        self.w.annotate(f"{verb}:{self.t}")
        self.reset_allowed = verb in ("abort", "retry")
        self.forced = self.forced or verb in ("promote", "promote-full")
        self._pass()

    @precondition(lambda self: self.world is not None)
    @rule()
    def new_revision(self) -> None:
        self.version += 1
        self.t += 1
        self.w.with_spec(spec__model__version=f"{self.version}.0.0")
        self.reset_allowed = True
        self._pass()

    def _pass(self, measurements: list[Measured] | None = None) -> None:
        w = self.w
        before = (w.md.status.candidate_revision, w.md.status.current_step)
        observed = w.observed(measurements or [])
        md_before, now = w.md, at(self.t)
        self.last = w.step(now, measurements=measurements or [])
        after = (self.last.status.candidate_revision, self.last.status.current_step)
        same_candidate = before[0] is not None and before[0] == after[0]
        if same_candidate and before[1] is not None and after[1] is not None and not self.reset_allowed:
            assert after[1] >= before[1], f"step went back from {before[1]} to {after[1]}"
        self.reset_allowed = False
        # Planning again from the status our decision produced, with the world as it was observed,
        # asks for no change: same children, same deletions, same status, no new events needed.
        doc = md_before.model_dump(mode="json", by_alias=True)
        doc["status"] = self.last.status.model_dump(mode="json", by_alias=True)
        again = decide(
            ModelDeployment.model_validate(doc),
            observed,
            now=now,
            owner_uid=UID,
            serving_image=IMAGE,
            router=w.router,
        )
        assert again.status == self.last.status
        assert again.desired == self.last.desired
        assert again.delete == self.last.delete

    @invariant()
    def split_is_a_percentage(self) -> None:
        if self.last is not None and self.last.split is not None:
            assert 0 <= self.last.split.candidate <= 100
            assert self.last.split.candidate + self.last.split.stable == 100

    @invariant()
    def candidate_never_exceeds_the_step_weight(self) -> None:
        if self.world is None or self.last is None:
            return
        s = self.last.status
        steps = rollout_steps(self.w.md.spec.rollout)
        if s.current_step is not None and s.phase in (Phase.PROGRESSING, Phase.PAUSED):
            assert s.weight <= routing_at(steps, s.current_step).candidate

    @invariant()
    def ended_rollouts_route_nothing_to_the_candidate(self) -> None:
        if self.last is not None and self.last.status.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK):
            assert_stable_only(self.last)

    @invariant()
    def a_crashing_candidate_is_never_promoted_without_a_human(self) -> None:
        if self.world is None or self.last is None or not self.w.crash_candidate or self.forced:
            return
        promoted = [h for h in self.w.md.status.history if h.outcome == "Promoted"]
        assert promoted == [], promoted


TestRollouts = Rollouts.TestCase
TestRollouts.settings = settings(
    max_examples=60, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
