"""Triggers: what can happen to a rollout, and `next_trigger`, which finds the first that applies.

Priority order: spec problems, a human's action, a spec change, then the rollout's own progress
(a webhook gate, an analysis verdict, a deadline, a step's work done). The transitions they cause
are in `machine.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from rollwise.api.actions import Request, requested_action
from rollwise.api.v1alpha1 import (
    BacktestPhase,
    DegradedPolicy,
    InconclusivePolicy,
    Phase,
    Reason,
    Verdict,
    WebhookType,
)
from rollwise.plan import analysis
from rollwise.plan.gates import Gate, gate, rollback_asked
from rollwise.plan.revision import revision_of
from rollwise.plan.split import TrafficSplit
from rollwise.plan.state import (
    ENDED_PHASES,
    State,
    World,
    current_step,
    required_analysis_spec,
    routed_split,
    step_work_done,
)
from rollwise.plan.steps import Analyze, Pause


@dataclass(frozen=True)
class Invalid:
    """The spec asks for something the router cannot do."""

    problems: tuple[str, ...]


@dataclass(frozen=True)
class Revalidated:
    """An invalid spec was fixed."""


@dataclass(frozen=True)
class Act:
    """A new `rollwise.dev/action` value."""

    request: Request


@dataclass(frozen=True)
class NewRevision:
    """The spec's model or runtime differs from both the stable and the current candidate."""


@dataclass(frozen=True)
class Reverted:
    """The spec went back to what the stable runs while a candidate existed."""


@dataclass(frozen=True)
class Degraded:
    """Monitoring found the promoted stable degraded, `onDegraded: rollback` is set and the stable
    before it is known: return to it."""

    message: str


@dataclass(frozen=True)
class Started:
    """The pre-rollout gate opened: the first step begins."""


@dataclass(frozen=True)
class StepDone:
    """The current step's work is done and the next step's gate is open."""


@dataclass(frozen=True)
class Backtested:
    """The candidate's backtest ended without a pass: shown worse, or no verdict (its policy
    decides)."""

    phase: BacktestPhase
    message: str


@dataclass(frozen=True)
class Judged:
    """The current analysis reached a verdict."""

    verdict: Verdict
    reason: str


@dataclass(frozen=True)
class Stuck:
    """The candidate did not become ready within progressDeadlineSeconds."""

    message: str


@dataclass(frozen=True)
class GateFailed:
    """A webhook refused (preRollout/step: roll back; confirmPromotion: pause)."""

    type: WebhookType
    message: str


@dataclass(frozen=True)
class RollbackAsked:
    """A rollback webhook answered 2xx."""

    message: str


@dataclass(frozen=True)
class Promoted:
    """The stable runs the candidate's revision and is ready."""


@dataclass(frozen=True)
class Settled:
    """After an abort or failure, all traffic is back on a ready stable."""


Trigger = (
    Invalid
    | Revalidated
    | Act
    | NewRevision
    | Reverted
    | Started
    | Backtested
    | Degraded
    | StepDone
    | Judged
    | Stuck
    | GateFailed
    | RollbackAsked
    | Promoted
    | Settled
)


def next_trigger(world: World, state: State) -> Trigger | None:
    """The first trigger that applies, in priority order: spec problems, a human, a spec change,
    then the rollout's own progress."""
    if world.problems:
        message = "; ".join(world.problems)
        if state.phase is not Phase.INVALID or state.message != message:
            return Invalid(world.problems)
        return None
    if state.phase is Phase.INVALID:
        return Revalidated()
    if (request := requested_action(world.md)) is not None and request.raw != state.last_action:
        return Act(request)
    spec_rev = world.spec_revision
    if spec_rev != revision_of(state.stable) and spec_rev != state.candidate:
        return NewRevision()
    if (
        spec_rev == revision_of(state.stable)
        and state.candidate is not None
        and state.phase in (Phase.PROGRESSING, Phase.PAUSED, *ENDED_PHASES)
    ):
        return Reverted()
    return _progress(world, state)


def _refused(g: Gate) -> GateFailed | None:
    return None if g.refused is None else GateFailed(g.refused.type, g.message)


def _progress(world: World, state: State) -> Trigger | None:
    """What the rollout's own progress triggers in its phase: a gate, a verdict, a deadline, done."""
    match state.phase:
        case Phase.PROGRESSING | Phase.PAUSED if (asked := rollback_asked(world, state)) is not None:
            return RollbackAsked(asked)
        case Phase.PROGRESSING if state.step is None and backtest_holds(world, state):
            return _backtested(state) or _stuck(world, state)
        case Phase.PROGRESSING if state.step is None:
            g = gate(world, state, 0)
            return _refused(g) or (Started() if g.open else _stuck(world, state))
        case Phase.PROGRESSING:
            return _stepping(world, state)
        case Phase.PAUSED if (
            state.reason is Reason.WEBHOOK_FAILED and gate(world, state, len(world.steps)).open
        ):
            return StepDone()
        case Phase.HEALTHY if (why := _degraded(world, state)) is not None:
            return Degraded(why)
        case Phase.PROMOTING if world.stable_ready(state) and world.routes(routed_split(world, state)):
            return Promoted()
        case Phase.ROLLING_BACK if world.stable_ready(state) and (
            world.routes(TrafficSplit.stable_only()) or world.unrouted()
        ):
            return Settled()
        case _:
            return None


def backtest_holds(world: World, state: State) -> bool:
    """The candidate's backtest keeps it from its first step: running, failed, or without a
    verdict unless `inconclusivePolicy: proceed`. No traffic reaches the candidate meanwhile (the
    split before the first step is all stable)."""
    spec, bt = world.md.spec.rollout.backtest, state.backtest
    if spec is None or bt is None or bt.revision != state.candidate:
        return False
    if bt.phase is BacktestPhase.INCONCLUSIVE:
        return spec.inconclusive_policy is not InconclusivePolicy.PROCEED
    return bt.phase is not BacktestPhase.PASSED


def _backtested(state: State) -> Backtested | None:
    bt = state.backtest
    if bt is None or bt.phase is BacktestPhase.RUNNING:
        return None
    return Backtested(bt.phase, bt.message)


def _degraded(world: World, state: State) -> str | None:
    """Why to return to the previous stable, when monitoring says so and one is kept."""
    spec, mon = world.md.spec.monitoring, state.monitoring
    if (
        spec is None
        or spec.on_degraded is not DegradedPolicy.ROLLBACK
        or mon is None
        or mon.healthy is not False
        or state.previous_stable is None
        or mon.revision != revision_of(state.stable)
    ):
        return None
    return mon.message


def _stepping(world: World, state: State) -> Trigger | None:
    """In a step: stuck or unrouted past the deadline, an analysis verdict, or the step done."""
    if (stuck := _stuck(world, state) or _unrouted(world, state)) is not None:
        return stuck
    step = current_step(world, state)
    if isinstance(step, Analyze) and state.analysis is not None:
        if state.analysis.verdict is not Verdict.RUNNING:
            spec = required_analysis_spec(world)
            _, why = analysis.verdict_of(spec, state.analysis, count=step.count)
            return Judged(state.analysis.verdict, why)
        return None
    if step_work_done(world, state):
        g = gate(world, state, (state.step or 0) + 1)
        return _refused(g) or (StepDone() if g.open else None)
    return None


def _stuck(world: World, state: State) -> Stuck | None:
    """A candidate not ready by the deadline: Kubernetes' own verdict, or ours from stepStartedAt."""
    if world.candidate_ready(state):
        return None
    c = world.observed.candidate
    why = c.message or "its pods are not ready"
    if c.progress_deadline_exceeded and c.revision == state.candidate:
        return Stuck(f"the candidate Deployment exceeded its progress deadline: {why}")
    started = state.step_started_at
    if started is not None and world.now >= started + world.deadline:
        seconds = world.md.spec.rollout.progress_deadline_seconds
        return Stuck(f"the candidate was not ready within progressDeadlineSeconds {seconds}: {why}")
    return None


def _unrouted(world: World, state: State) -> Stuck | None:
    """A step whose routing never took effect (a missing HTTPRoute, a rejected route) by the deadline."""
    started = state.step_started_at
    if (
        isinstance(current_step(world, state), (Pause, Analyze))
        or started is None
        or world.now < started + world.deadline
        or world.routes(routed_split(world, state))
    ):
        return None
    seconds = world.md.spec.rollout.progress_deadline_seconds
    return Stuck(f"the traffic router did not apply the step within {seconds}s: {world.router_message()}")
