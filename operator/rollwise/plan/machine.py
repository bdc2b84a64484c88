"""The ModelDeployment state machine: (spec, status, observed, now, router) -> Decision.

Pure: no I/O, no clock, no environment. Every pass reads the rollout's position from the status
(phase, currentStep, stepStartedAt, analysis, lastAction), looks at the observed world, and
applies transitions until none fires; the desired children are then derived from the resulting
state alone. So an operator killed mid-step resumes at the same step, and planning again from the
state our own decision produced asks for no change.

Read it top to bottom:
1. `Action` / `requested_action`: manual gates from the `rollwise.dev/action` annotation.
2. `State`: the rollout's position, as stored in the status.
3. Events: what can happen (`next_event` finds the first that applies, in priority order).
4. `transition`: one `match` on (phase, event) — every phase change is there.
5. `desired_objects`: Deployments, Services, HPAs and router objects for a state.
6. `decide`: the loop tying them together.

Promotion is Flagger's: the stable Deployment is updated to the candidate's revision while the
candidate keeps its share, and only once the stable runs it does traffic return to the stable and
the candidate go away. Abort and failure route 100 % to stable at once and scale the candidate to
zero; its Deployment is kept (at 0) until the spec moves on, so its events stay inspectable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from rollwise.api.v1alpha1 import (
    AnalysisSpec,
    AnalysisStatus,
    Autoscaling,
    ConditionType,
    HistoryEntry,
    InconclusivePolicy,
    ModelDeployment,
    ModelDeploymentStatus,
    Phase,
    Reason,
    RevisionSpec,
    StrategyName,
    Verdict,
    WebhookType,
)
from rollwise.plan import analysis as judge
from rollwise.plan.conditions import kstatus_conditions, with_history
from rollwise.plan.decision import ChildRef, Decision, EventType, Note, WebhookCall
from rollwise.plan.desired import (
    desired_children,
    desired_deployment,
    desired_hpa,
    desired_services,
    revision_from_spec,
    revision_of,
)
from rollwise.plan.manifest import Manifest
from rollwise.plan.names import Track, track_name
from rollwise.plan.observed import Observed, TrackState, WebhookKey
from rollwise.plan.routing import Router
from rollwise.plan.split import TrafficSplit, replicas_for
from rollwise.plan.steps import (
    Analyze,
    Pause,
    Preview,
    SetWeight,
    Step,
    describe_step,
    rollout_steps,
    routing_at,
)

WAIT_FOR_READY = timedelta(seconds=30)
"""How soon to look again while pods come up, if no event wakes us first: a fallback, since every
change of a child (and of a route) wakes the pass that waits for it, and deadlines have timers of
their own. At 5 s, a wave of 1 000 models waiting minutes for pods ran 30 passes each for nothing."""
WAIT_FOR_WEBHOOK = timedelta(seconds=1)
"""How soon to look again after asking for webhook calls (the I/O layer answers in between)."""
POLL_WEBHOOK = timedelta(seconds=30)
"""How often rollback webhooks are polled, and a failing confirmPromotion is asked again."""
MAX_TRANSITIONS = 3 * 32 + 16
"""A bound on transitions per pass (each step can start, finish, and pass a gate)."""

ACTION_ANNOTATION = "rollwise.dev/action"
"""Manual gate: `kubectl annotate md NAME rollwise.dev/action=VERB:NONCE --overwrite`.

VERB is pause, resume, promote (skip the current step), promote-full (skip to promotion), abort
or retry (restart a rolled-back candidate). The annotation is level state that stays on the
object, so the value last applied is kept in `status.lastAction` and the same value is never
applied twice; the NONCE (any text, e.g. a timestamp) makes a repeated action a new value. A
kubectl plugin sets exactly this annotation."""

ROLLOUT_PHASES = frozenset({Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING})
"""Phases in which a candidate runs and may take traffic."""
ENDED_PHASES = frozenset({Phase.ROLLING_BACK, Phase.ROLLED_BACK})
"""Phases in which the candidate exists at zero replicas after a failure or abort."""
STEADY_PHASES = frozenset({Phase.PENDING, Phase.HEALTHY, Phase.DEGRADED})
"""No rollout: the stable serves everything; the phase follows the stable's health."""


# ---------------------------------------------------------------------------------------------
# 1. Manual gates


class Action(StrEnum):
    """Verbs of the `rollwise.dev/action` annotation."""

    PAUSE = "pause"
    RESUME = "resume"
    PROMOTE = "promote"
    PROMOTE_FULL = "promote-full"
    ABORT = "abort"
    RETRY = "retry"


@dataclass(frozen=True)
class Request:
    """A not-yet-applied annotation value; `action` None when the verb is unknown."""

    raw: str
    action: Action | None


def requested_action(md: ModelDeployment) -> Request | None:
    """The annotation's value when it differs from the last one applied (`status.lastAction`)."""
    raw = md.metadata.annotations.get(ACTION_ANNOTATION)
    if raw is None or raw == md.status.last_action:
        return None
    verb = raw.split(":", 1)[0].strip()
    try:
        return Request(raw, Action(verb))
    except ValueError:
        return Request(raw, None)


# ---------------------------------------------------------------------------------------------
# 2. State: the rollout's position, exactly what the status stores


@dataclass(frozen=True)
class State:
    phase: Phase
    stable: RevisionSpec
    """What the stable track runs (the candidate's revision once promotion starts)."""
    candidate: str | None = None
    """Revision hash of the candidate; None when no rollout happened since the last promotion."""
    candidate_version: str | None = None
    step: int | None = None
    """Index into the strategy's steps; None before the first step (pre-rollout gate)."""
    step_started_at: datetime | None = None
    analysis: AnalysisStatus | None = None
    reason: Reason = Reason.AVAILABLE
    message: str = ""
    last_action: str | None = None
    history: tuple[HistoryEntry, ...] = ()
    notes: tuple[Note, ...] = field(default=(), compare=False)

    @classmethod
    def of(cls, md: ModelDeployment) -> State:
        """The state the last pass wrote; a new object starts Pending with the spec as stable."""
        s = md.status
        stable = s.stable if s.stable is not None else revision_from_spec(md)
        return cls(
            phase=s.phase or Phase.PENDING,
            stable=stable,
            candidate=s.candidate_revision,
            candidate_version=s.candidate_version,
            step=s.current_step,
            step_started_at=s.step_started_at,
            analysis=s.analysis,
            reason=_reason_of(s),
            message=s.message,
            last_action=s.last_action,
            history=tuple(s.history),
        )

    def note(self, kind: EventType, reason: Reason, message: str) -> State:
        return replace(self, notes=(*self.notes, Note(kind, reason, message)))


def _reason_of(status: ModelDeploymentStatus) -> Reason:
    for c in status.conditions:
        if c.status == "True":
            return c.reason
    return Reason.AVAILABLE


@dataclass(frozen=True)
class World:
    """Everything a pass reads, besides the state: the spec, what was observed, the time."""

    md: ModelDeployment
    observed: Observed
    now: datetime
    router: Router
    steps: tuple[Step, ...]
    problems: tuple[str, ...]

    @property
    def spec_revision(self) -> str:
        return revision_of(revision_from_spec(self.md))

    @property
    def analysis_spec(self) -> AnalysisSpec | None:
        return self.md.spec.rollout.analysis

    @property
    def deadline(self) -> timedelta:
        return timedelta(seconds=self.md.spec.rollout.progress_deadline_seconds)

    def candidate_ready(self, state: State) -> bool:
        """The candidate Deployment runs the candidate revision, fully rolled out and available."""
        c = self.observed.candidate
        return c.available and c.revision == state.candidate

    def stable_ready(self, state: State) -> bool:
        s = self.observed.stable
        return s.available and s.revision == revision_of(state.stable)

    def routes(self, split: TrafficSplit) -> bool:
        """The router reports `split` in effect on the live objects."""
        objects = (*self.observed.children, *self.observed.router_objects)
        return self.router.read(self.md, objects).carries(split)

    def unrouted(self) -> bool:
        """The router's object is missing: nothing can route to the candidate through it."""
        objects = (*self.observed.children, *self.observed.router_objects)
        return self.router.read(self.md, objects).split is None

    def router_message(self) -> str:
        objects = (*self.observed.children, *self.observed.router_objects)
        return self.router.read(self.md, objects).message


# ---------------------------------------------------------------------------------------------
# 3. Events


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
class Started:
    """The pre-rollout gate opened: the first step begins."""


@dataclass(frozen=True)
class StepDone:
    """The current step's work is done and the next step's gate is open."""


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


Event = (
    Invalid
    | Revalidated
    | Act
    | NewRevision
    | Reverted
    | Started
    | StepDone
    | Judged
    | Stuck
    | GateFailed
    | RollbackAsked
    | Promoted
    | Settled
)


def _hooks(world: World, kind: WebhookType) -> list[tuple[str, str, int]]:
    return [(w.name, w.url, w.timeout_seconds) for w in world.md.spec.rollout.webhooks if w.type is kind]


def gate_keys(world: World, state: State, step: int | None) -> list[tuple[WebhookKey, str, int]]:
    """Webhooks that must answer 2xx before `step` starts (None: before promotion... see below).

    Step 0 needs the preRollout and step webhooks; step k the step webhooks; index len(steps)
    (promotion) the confirmPromotion webhooks.
    """
    rev = state.candidate or ""
    out: list[tuple[WebhookKey, str, int]] = []
    if step == len(world.steps):
        kinds = [WebhookType.CONFIRM_PROMOTION]
    elif step == 0:
        kinds = [WebhookType.PRE_ROLLOUT, WebhookType.STEP]
    else:
        kinds = [WebhookType.STEP]
    for kind in kinds:
        for name, url, timeout in _hooks(world, kind):
            out.append((WebhookKey(name, kind, rev, step), url, timeout))
    return out


@dataclass(frozen=True)
class Gate:
    open: bool
    failed: GateFailed | None = None


def gate(world: World, state: State, step: int) -> Gate:
    """Open when every gate webhook answered 2xx; failed on the first refusal."""
    answers = {r.key: r for r in world.observed.webhooks}
    pending = False
    for key, _, _ in gate_keys(world, state, step):
        answer = answers.get(key)
        if answer is None:
            pending = True
        elif not answer.ok:
            return Gate(
                False, GateFailed(key.type, f"webhook {key.name} ({key.type}) refused: {answer.detail}")
            )
    return Gate(not pending)


def _current(world: World, state: State) -> Step | None:
    if state.step is None or not 0 <= state.step < len(world.steps):
        return None
    return world.steps[state.step]


def _step_work_done(world: World, state: State) -> bool:
    """The current step has done its work (analysis steps finish through `Judged`)."""
    step = _current(world, state)
    started = state.step_started_at or world.now
    match step:
        case Pause(duration=None) | Analyze() | None:
            return False
        case Pause(duration=d) if d is not None:
            return world.now >= started + d
        case SetWeight() if _is_switch(world, state):
            delay = timedelta(seconds=_blue_green_delay(world))
            return (
                world.candidate_ready(state)
                and world.routes(split_of(world, state))
                and (world.now >= started + delay)
            )
        case _:
            return world.candidate_ready(state) and world.routes(split_of(world, state))


def _is_switch(world: World, state: State) -> bool:
    """Blue/green's last step: the switch, held for scaleDownDelaySeconds as an instant rollback."""
    return (
        world.md.spec.rollout.strategy is StrategyName.BLUE_GREEN
        and state.step is not None
        and state.step == len(world.steps) - 1
    )


def _blue_green_delay(world: World) -> int:
    bg = world.md.spec.rollout.blue_green
    return 0 if bg is None else bg.scale_down_delay_seconds


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
        isinstance(_current(world, state), (Pause, Analyze))
        or started is None
        or world.now < started + world.deadline
        or world.routes(split_of(world, state))
    ):
        return None
    seconds = world.md.spec.rollout.progress_deadline_seconds
    return Stuck(f"the traffic router did not apply the step within {seconds}s: {world.router_message()}")


def next_event(world: World, state: State) -> Event | None:
    """The first event that applies, in priority order: spec problems, a human, a spec change,
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
    match state.phase:
        case Phase.PROGRESSING | Phase.PAUSED if (asked := _rollback_asked(world, state)) is not None:
            return asked
        case Phase.PROGRESSING if state.step is None:
            g = gate(world, state, 0)
            return g.failed or (Started() if g.open else _stuck(world, state))
        case Phase.PROGRESSING:
            if (stuck := _stuck(world, state) or _unrouted(world, state)) is not None:
                return stuck
            step = _current(world, state)
            if isinstance(step, Analyze) and state.analysis is not None:
                if state.analysis.verdict is not Verdict.RUNNING:
                    _, why = judge.verdict_of(_spec(world), state.analysis, count=step.count)
                    return Judged(state.analysis.verdict, why)
                return None
            if _step_work_done(world, state):
                g = gate(world, state, (state.step or 0) + 1)
                return g.failed or (StepDone() if g.open else None)
            return None
        case Phase.PAUSED if (
            state.reason is Reason.WEBHOOK_FAILED and gate(world, state, len(world.steps)).open
        ):
            return StepDone()
        case Phase.PROMOTING if world.stable_ready(state) and world.routes(split_of(world, state)):
            return Promoted()
        case Phase.ROLLING_BACK if world.stable_ready(state) and (
            world.routes(TrafficSplit.stable_only()) or world.unrouted()
        ):
            return Settled()
        case _:
            return None


def _rollback_asked(world: World, state: State) -> RollbackAsked | None:
    for r in world.observed.webhooks:
        if r.key.type is WebhookType.ROLLBACK and r.key.revision == state.candidate and r.ok:
            return RollbackAsked(f"webhook {r.key.name} (rollback) asked for a rollback: {r.detail}")
    return None


def _spec(world: World) -> AnalysisSpec:
    spec = world.analysis_spec
    if spec is None:  # the API rejects analysis steps without spec.rollout.analysis
        raise ValueError("spec.rollout.analysis: required by the strategy's analysis step")
    return spec


# ---------------------------------------------------------------------------------------------
# 4. Transitions


def transition(world: World, state: State, event: Event) -> State:
    """The only place a phase changes: one match on (phase, event)."""
    now = world.now
    match (state.phase, event):
        case (_, Invalid(problems=problems)):
            message = "; ".join(problems)
            ended = state
            if state.phase in ROLLOUT_PHASES:
                ended = _history(state, Reason.SUPERSEDED, f"the spec became invalid: {message}", now)
            return replace(
                ended,
                phase=Phase.INVALID,
                reason=Reason.INVALID_SPEC,
                message=message,
                candidate=None,
                candidate_version=None,
                step=None,
                step_started_at=None,
                analysis=None,
            ).note(EventType.WARNING, Reason.INVALID_SPEC, message)
        case (Phase.INVALID, Revalidated()):
            return _steady(state, "the spec is valid again")
        case (_, Act(request=request)):
            return _act(world, replace(state, last_action=request.raw), request)
        case (Phase.PROMOTING, NewRevision()):
            # The stable already runs the old candidate: it is promoted; the new one starts over.
            done = _history(state, Reason.PROMOTED, "superseded while promoting; the stable runs it", now)
            return _start(world, done)
        case (phase, NewRevision()) if phase in ROLLOUT_PHASES:
            return _start(world, _history(state, Reason.SUPERSEDED, "a newer revision replaced it", now))
        case (_, NewRevision()):
            return _start(world, state)
        case (_, Reverted()):
            ended = state
            if state.phase in (Phase.PROGRESSING, Phase.PAUSED):
                ended = _history(state, Reason.SUPERSEDED, "the spec went back to the stable revision", now)
            return _steady(ended, "the spec went back to the stable revision; the candidate is removed")
        case (Phase.PROGRESSING, Started()):
            return _enter(world, state, 0)
        case (Phase.PROGRESSING, StepDone()):
            return _enter(world, state, (state.step or 0) + 1)
        case (Phase.PROGRESSING, Judged(verdict=Verdict.SUCCESSFUL, reason=why)):
            passed = state.note(EventType.NORMAL, Reason.ANALYSIS_RUNNING, f"analysis passed: {why}")
            return _enter(world, passed, (state.step or 0) + 1)
        case (Phase.PROGRESSING, Judged(verdict=Verdict.INCONCLUSIVE, reason=why)) if (
            _spec(world).inconclusive_policy is InconclusivePolicy.PAUSE
        ):
            message = f"analysis inconclusive, paused for a human (resume, promote or abort): {why}"
            return replace(
                state, phase=Phase.PAUSED, reason=Reason.ANALYSIS_INCONCLUSIVE, message=message
            ).note(EventType.WARNING, Reason.ANALYSIS_INCONCLUSIVE, message)
        case (Phase.PROGRESSING, Judged(verdict=Verdict.INCONCLUSIVE, reason=why)):
            return _rollback(world, state, Reason.ANALYSIS_INCONCLUSIVE, f"analysis inconclusive: {why}")
        case (Phase.PROGRESSING, Judged(reason=why)):
            return _rollback(world, state, Reason.ANALYSIS_FAILED, f"analysis failed: {why}")
        case (Phase.PROGRESSING, Stuck(message=why)):
            return _rollback(world, state, Reason.PROGRESS_DEADLINE_EXCEEDED, why)
        case (Phase.PROGRESSING, GateFailed(type=WebhookType.CONFIRM_PROMOTION, message=why)):
            message = f"promotion not confirmed, paused until it answers 2xx: {why}"
            return replace(state, phase=Phase.PAUSED, reason=Reason.WEBHOOK_FAILED, message=message).note(
                EventType.WARNING, Reason.WEBHOOK_FAILED, message
            )
        case (Phase.PROGRESSING, GateFailed(message=why)):
            return _rollback(world, state, Reason.WEBHOOK_FAILED, why)
        case (Phase.PROGRESSING | Phase.PAUSED, RollbackAsked(message=why)):
            return _rollback(world, state, Reason.WEBHOOK_FAILED, why)
        case (Phase.PAUSED, StepDone()):
            # confirmPromotion answered 2xx at last.
            return _enter(world, state, len(world.steps))
        case (Phase.PROMOTING, Promoted()):
            done = _history(state, Reason.PROMOTED, f"{state.candidate_version} is the new stable", now)
            return _steady(done, f"promoted {state.candidate_version}").note(
                EventType.NORMAL, Reason.PROMOTED, f"promoted {state.candidate_version} to stable"
            )
        case (Phase.ROLLING_BACK, Settled()):
            message = f"rolled back; the stable serves all traffic ({state.message})"
            return replace(state, phase=Phase.ROLLED_BACK, message=message[:32768])
        case _:
            return state


def _act(world: World, state: State, request: Request) -> State:
    """A manual gate; an action that does not apply in this phase is recorded and explained."""
    phase, action = state.phase, request.action
    live = phase in (Phase.PROGRESSING, Phase.PAUSED)
    match (phase, action):
        case (_, None):
            return state.note(
                EventType.WARNING,
                Reason.INVALID_SPEC,
                f"annotation {ACTION_ANNOTATION}: {request.raw!r} is not an action; use one of "
                + ", ".join(a.value for a in Action)
                + " (optionally followed by :NONCE)",
            )
        case (Phase.PROGRESSING, Action.PAUSE):
            message = f"paused by {ACTION_ANNOTATION} at step {state.step}"
            return replace(state, phase=Phase.PAUSED, reason=Reason.PAUSED, message=message).note(
                EventType.NORMAL, Reason.PAUSED, message
            )
        case (Phase.PAUSED, Action.RESUME):
            return _resume(world, state)
        case (_, Action.PROMOTE) if live and state.step is None:
            return _enter(world, state.note(EventType.NORMAL, Reason.PROGRESSING, "promote: first step"), 0)
        case (_, Action.PROMOTE) if live:
            return _enter(
                world,
                state.note(EventType.NORMAL, Reason.PROGRESSING, f"promote: skipped step {state.step}"),
                (state.step or 0) + 1,
            )
        case (_, Action.PROMOTE_FULL) if live:
            return _promote(
                world, state.note(EventType.NORMAL, Reason.PROMOTED, "promote-full: skipping the rest")
            )
        case (_, Action.ABORT) if live:
            return _rollback(world, state, Reason.ABORTED, f"aborted by {ACTION_ANNOTATION}")
        case (Phase.ROLLED_BACK | Phase.ROLLING_BACK, Action.RETRY) if state.candidate == world.spec_revision:
            return _start(world, state.note(EventType.NORMAL, Reason.PROGRESSING, "retry: starting over"))
        case _:
            return state.note(
                EventType.NORMAL,
                state.reason,
                f"{ACTION_ANNOTATION}={request.raw!r} ignored: nothing to {action} while {phase}",
            )


def _start(world: World, state: State) -> State:
    """A new rollout of the spec's revision: candidate deployed, no step yet (pre-rollout gate)."""
    rev = revision_from_spec(world.md)
    version = rev.model.version
    started = replace(
        state,
        phase=Phase.PROGRESSING,
        candidate=revision_of(rev),
        candidate_version=version,
        step=None,
        step_started_at=world.now,
        analysis=None,
        reason=Reason.PROGRESSING,
        message=f"rolling out {version} ({world.md.spec.rollout.strategy})",
    )
    return started.note(
        EventType.NORMAL, Reason.PROGRESSING, f"rolling out {version} as candidate ({revision_of(rev)})"
    )


def _enter(world: World, state: State, index: int) -> State:
    """Begin step `index`; past the last step, promotion begins."""
    if index >= len(world.steps):
        return _promote(world, state)
    step = world.steps[index]
    analysis = None
    if isinstance(step, Analyze):
        analysis = judge.start(_spec(world), step=index, now=world.now)
    phase, reason = Phase.PROGRESSING, Reason.PROGRESSING
    message = f"step {index + 1}/{len(world.steps)}: {describe_step(step)}"
    if isinstance(step, Pause) and step.duration is None:
        phase, reason = Phase.PAUSED, Reason.PAUSED
        message += "; waiting for rollwise.dev/action resume or promote"
    elif isinstance(step, Analyze):
        reason = Reason.ANALYSIS_RUNNING
    return replace(
        state,
        phase=phase,
        step=index,
        step_started_at=world.now,
        analysis=analysis or state.analysis,
        reason=reason,
        message=message,
    ).note(EventType.NORMAL, reason, message)


def _waiting_on_router(world: World, state: State) -> State:
    """While a ready candidate's step is not yet routed, say what the router waits for (a Gateway
    rejecting the route, a missing VirtualService, old pods draining) instead of the bare step."""
    step = _current(world, state)
    if (
        state.phase is not Phase.PROGRESSING
        or state.step is None
        or step is None
        or isinstance(step, (Pause, Analyze))
        or not world.candidate_ready(state)
        or world.routes(split_of(world, state))
    ):
        return state
    why = world.router_message()
    base = f"step {state.step + 1}/{len(world.steps)}: {describe_step(step)}"
    return replace(state, message=f"{base}; waiting for the traffic router: {why}" if why else base)


def _resume(world: World, state: State) -> State:
    """Resume: past an indefinite pause step; restart an inconclusive analysis; otherwise carry
    on with the step, its clock restarted (an analysis keeps its tallies, rebased in time)."""
    step = _current(world, state)
    note = state.note(EventType.NORMAL, Reason.PROGRESSING, f"resumed by {ACTION_ANNOTATION}")
    if state.step is not None and isinstance(step, Pause) and step.duration is None:
        return _enter(world, note, state.step + 1)
    if (
        state.reason is Reason.WEBHOOK_FAILED
        and state.step is not None
        and state.step >= len(world.steps) - 1
    ):
        # confirmPromotion refused: back to the last step, whose gate is asked again.
        return replace(note, phase=Phase.PROGRESSING, reason=Reason.PROGRESSING, message="asking again")
    if (
        isinstance(step, Analyze)
        and state.analysis is not None
        and state.analysis.verdict is Verdict.INCONCLUSIVE
    ):
        return _enter(world, note, state.step or 0)
    analysis = state.analysis
    if isinstance(step, Analyze) and analysis is not None:
        spec = _spec(world)
        rebased = world.now - judge.taken(analysis) * timedelta(seconds=spec.interval_seconds)
        analysis = analysis.model_copy(update={"started_at": rebased})
    return replace(
        note,
        phase=Phase.PROGRESSING,
        reason=Reason.ANALYSIS_RUNNING if isinstance(step, Analyze) else Reason.PROGRESSING,
        message=f"resumed at step {(state.step or 0) + 1}/{len(world.steps)}",
        step_started_at=world.now,
        analysis=analysis,
    )


def _promote(world: World, state: State) -> State:
    """The stable starts running the candidate's revision; the candidate keeps its share meanwhile."""
    message = f"promoting {state.candidate_version}: updating the stable Deployment"
    return replace(
        state,
        phase=Phase.PROMOTING,
        stable=revision_from_spec(world.md),
        step=min(state.step if state.step is not None else 0, len(world.steps) - 1),
        reason=Reason.PROMOTED,
        message=message,
    ).note(EventType.NORMAL, Reason.PROMOTED, message)


def _rollback(world: World, state: State, reason: Reason, why: str) -> State:
    """All traffic to stable now, the candidate to zero; the reason goes to status, history, Events."""
    ended = _history(
        state, Reason.ABORTED if reason is Reason.ABORTED else Reason.ROLLED_BACK, why, world.now
    )
    message = f"rolling back {state.candidate_version}: {why}"[:32768]
    return replace(ended, phase=Phase.ROLLING_BACK, reason=reason, message=message).note(
        EventType.WARNING, reason, message
    )


def _history(state: State, outcome: Reason, why: str, now: datetime) -> State:
    if state.candidate is None:
        return state
    entry = HistoryEntry(
        version=state.candidate_version or "",
        revision=state.candidate,
        outcome=outcome,
        message=why[:4096],
        finished_at=now,
    )
    return replace(state, history=tuple(with_history(state.history, entry)))


def _steady(state: State, message: str) -> State:
    """No rollout: the stable serves everything (its health sets the exact phase afterwards)."""
    return replace(
        state,
        phase=Phase.HEALTHY,
        candidate=None,
        candidate_version=None,
        step=None,
        step_started_at=None,
        reason=Reason.AVAILABLE,
        message=message,
    )


def _fold_measurements(world: World, state: State) -> State:
    """Count the measurements the I/O layer took for the running analysis (see analysis.record)."""
    step = _current(world, state)
    if (
        state.phase is not Phase.PROGRESSING
        or not isinstance(step, Analyze)
        or state.analysis is None
        or state.analysis.verdict is not Verdict.RUNNING
        or state.step is None
    ):
        return state
    spec = _spec(world)
    folded = judge.record(
        spec, state.analysis, world.observed.measurements, step=state.step, count=step.count
    )
    if folded == state.analysis:
        return state
    return replace(state, analysis=folded)


def _stable_view(stable: TrackState, revision: RevisionSpec) -> TrackState:
    """The stable only counts as ready once it runs the revision we want."""
    if stable.revision == revision_of(revision):
        return stable
    return TrackState(exists=stable.exists, replicas=stable.replicas, message=stable.message)


def _health(state: State, stable: TrackState, *, first: bool = False) -> State:
    """Steady phases follow the stable's health (no rollout to drive them)."""
    if state.phase not in STEADY_PHASES:
        return state
    why = f": {stable.message}" if stable.message else ""
    if stable.progress_deadline_exceeded:
        phase, reason = Phase.DEGRADED, Reason.PROGRESS_DEADLINE_EXCEEDED
        message = f"the stable Deployment did not become ready in time: {stable.message or 'see its pods'}"
    elif stable.available:
        phase, reason = Phase.HEALTHY, Reason.AVAILABLE
        message = f"{stable.available_replicas}/{stable.replicas} replicas available"
    elif state.phase in (Phase.HEALTHY, Phase.DEGRADED) and stable.exists and stable.available_replicas == 0:
        phase, reason = Phase.DEGRADED, Reason.STABLE_UNAVAILABLE
        message = f"no stable replica is available{why}"
    else:
        phase, reason = Phase.PENDING, Reason.WAITING_FOR_READY
        message = f"waiting for the stable Deployment to become ready{why}"
    out = replace(state, phase=phase, reason=reason, message=message)
    if phase != state.phase or first:  # `first`: a new object gets an Event for its first phase
        kind = EventType.NORMAL if phase in (Phase.HEALTHY, Phase.PENDING) else EventType.WARNING
        out = out.note(kind, reason, f"{phase.value}: {message}")
    return out


# ---------------------------------------------------------------------------------------------
# 5. Desired objects


def split_of(world: World, state: State) -> TrafficSplit:
    """The split a state routes.

    In progress: the split at the current step (all-stable before the first). Promoting: only the
    weighted share, so the stable rolls to the new revision once, without mirror or hash flags.
    Otherwise: all-stable, no mirroring.
    """
    match state.phase:
        case Phase.PROGRESSING | Phase.PAUSED if state.step is not None:
            return routing_at(world.steps, min(state.step, len(world.steps) - 1))
        case Phase.PROMOTING if state.step is not None:
            return TrafficSplit(candidate=routing_at(world.steps, state.step).candidate)
        case _:
            return TrafficSplit.stable_only()


def _share(total: int, weight: int) -> int:
    """Candidate pods for a weight when the stable stays full: ceil(total * weight / 100), >= 1."""
    return max(1, math.ceil(total * weight / 100))


@dataclass(frozen=True)
class Scale:
    """Pods per track: a fixed count, or HPA bounds (`None` count) when autoscaling."""

    stable: int
    candidate: int


def scale(world: World, state: State, split: TrafficSplit, total: int) -> Scale:
    """Pods per track for `total` pods per track (the spec's replicas, or an HPA bound).

    - Abort/rollback: stable full, candidate 0.
    - Blue/green: both full (the preview may be smaller: previewReplicas); the old stable stays
      full after the switch, as the instant rollback.
    - Shadow: both full (the candidate receives a copy of all traffic).
    - The `replicas` router weights by pod ratio: `replicas_for`, with one pod on each side at
      any weight strictly between 0 and 100 (even with total 1: a 5 % canary must be measured).
    - Other routers and user-hash forwarding: the stable stays full, the candidate gets the
      weight's share, at least one pod.
    Example, total 4, replicas router, weight 25: stable 3, candidate 1; istio: stable 4, candidate 1.
    """
    if state.phase in ENDED_PHASES or state.candidate is None:
        return Scale(total, 0)
    step = _current(world, state)
    if world.md.spec.rollout.strategy is StrategyName.BLUE_GREEN:
        bg = world.md.spec.rollout.blue_green
        preview = bg.preview_replicas if bg is not None and bg.preview_replicas is not None else total
        before_switch = split.candidate < 100 and state.phase is not Phase.PROMOTING
        return Scale(total, preview if before_switch else total)
    if split.mirror or (isinstance(step, Preview)):
        return Scale(total, total)
    w = split.candidate
    if world.router.scales_by_weight and split.sticky_header is None and not split.matches:
        if state.phase is Phase.PROMOTING:
            r = replicas_for(TrafficSplit(w), total)
            return Scale(total, max(1, r.candidate))
        if w == 100:
            return Scale(0, total)
        r = replicas_for(TrafficSplit(w), total)
        return Scale(max(1, r.stable), max(1, r.candidate))
    return Scale(total, total if w == 100 else _share(total, w))


def _candidate_exists(state: State) -> bool:
    return state.candidate is not None and state.phase in (ROLLOUT_PHASES | ENDED_PHASES)


def desired_objects(
    world: World, state: State, *, owner_uid: str, serving_image: str
) -> tuple[list[Manifest], list[ChildRef], TrafficSplit]:
    """Children for a state, the children to delete, and the split they route."""
    md, observed = world.md, world.observed
    split = split_of(world, state)
    routing = world.router.render(md, split, observed.router_objects)
    runtime = md.spec.runtime
    auto = runtime.autoscaling
    candidate_runs = _candidate_exists(state)
    fixed = scale(world, state, split, runtime.replica_count)
    out: list[Manifest] = [
        desired_deployment(
            md,
            track=Track.STABLE,
            revision=state.stable,
            replicas=None if auto is not None and fixed.stable > 0 else fixed.stable,
            owner_uid=owner_uid,
            serving_image=serving_image,
            extra_args=routing.stable_args,
        )
    ]
    if candidate_runs:
        out.append(
            desired_deployment(
                md,
                track=Track.CANDIDATE,
                revision=revision_from_spec(md),
                replicas=None if auto is not None and fixed.candidate > 0 else fixed.candidate,
                owner_uid=owner_uid,
                serving_image=serving_image,
                extra_args=routing.candidate_args,
            )
        )
    out += desired_services(
        md,
        owner_uid=owner_uid,
        main_track=routing.main_track,
        main_annotations=dict(routing.main_annotations),
        track_services=candidate_runs or world.router.routes_to_tracks,
    )
    delete: list[ChildRef] = []
    if auto is not None:
        out += _hpas(world, state, split, auto, owner_uid)
    wanted = {(m["kind"], _name(m)) for m in out}
    candidate, stable = (track_name(md.metadata.name, t) for t in (Track.CANDIDATE, Track.STABLE))
    for kind, api_version, name in (
        ("Deployment", "apps/v1", candidate),
        ("HorizontalPodAutoscaler", "autoscaling/v2", candidate),
        ("Service", "v1", candidate),
        ("Service", "v1", stable),
    ):
        if (kind, name) not in wanted and any(
            c.get("kind") == kind and _name(c) == name for c in observed.children
        ):
            delete.append(ChildRef(api_version, kind, name))
    stable_hpa = track_name(md.metadata.name, Track.STABLE)
    if auto is None and any(
        c.get("kind") == "HorizontalPodAutoscaler" and _name(c) == stable_hpa for c in observed.children
    ):
        delete.append(ChildRef("autoscaling/v2", "HorizontalPodAutoscaler", stable_hpa))
    out += list(routing.objects)
    return out, delete, split


def _name(m: Manifest) -> str:
    meta = m.get("metadata")
    return str(meta.get("name", "")) if isinstance(meta, dict) else ""


def _hpas(world: World, state: State, split: TrafficSplit, auto: Autoscaling, uid: str) -> list[Manifest]:
    """One HPA per track, bounds narrowed to the step so the HPA never fights the rollout."""
    low = scale(world, state, split, auto.min_replicas)
    high = scale(world, state, split, auto.max_replicas)
    md = world.md
    out: list[Manifest] = []
    if high.stable > 0:
        out.append(
            desired_hpa(
                md,
                track=Track.STABLE,
                autoscaling=auto,
                owner_uid=uid,
                min_replicas=max(1, min(low.stable, high.stable)),
                max_replicas=max(1, high.stable),
            )
        )
    if _candidate_exists(state) and high.candidate > 0:
        out.append(
            desired_hpa(
                md,
                track=Track.CANDIDATE,
                autoscaling=auto,
                owner_uid=uid,
                min_replicas=max(1, min(low.candidate, high.candidate)),
                max_replicas=max(1, high.candidate),
            )
        )
    return out


def webhook_calls(world: World, state: State) -> list[WebhookCall]:
    """Calls the I/O layer must make now: the next gate's webhooks, rollback polls, and the
    post-rollout notification in the pass a rollout ends."""
    answered = {r.key for r in world.observed.webhooks}
    calls: list[WebhookCall] = []
    if state.phase is Phase.PROGRESSING and state.candidate is not None:
        nxt = 0 if state.step is None else state.step + 1
        if state.step is None or _step_work_done(world, state) or _judged_ok(state):
            for key, url, timeout in gate_keys(world, state, nxt):
                if key not in answered:
                    calls.append(WebhookCall(key, url, timeout))
    if state.phase is Phase.PAUSED and state.reason is Reason.WEBHOOK_FAILED and state.candidate is not None:
        for key, url, timeout in gate_keys(world, state, len(world.steps)):
            calls.append(WebhookCall(key, url, timeout))
    if state.phase in (Phase.PROGRESSING, Phase.PAUSED) and state.candidate is not None:
        for name, url, timeout in _hooks(world, WebhookType.ROLLBACK):
            calls.append(
                WebhookCall(WebhookKey(name, WebhookType.ROLLBACK, state.candidate, None), url, timeout)
            )
    return calls


def _judged_ok(state: State) -> bool:
    return state.analysis is not None and state.analysis.verdict is Verdict.SUCCESSFUL


def _post_rollout(world: World, before: State, after: State) -> list[WebhookCall]:
    """postRollout webhooks, asked once: in the pass whose transitions end a rollout."""
    ended = before.candidate is not None and (
        (after.phase in STEADY_PHASES and before.phase not in STEADY_PHASES)
        or (after.phase is Phase.ROLLING_BACK and before.phase is not Phase.ROLLING_BACK)
    )
    if not ended or before.candidate is None:
        return []
    return [
        WebhookCall(WebhookKey(name, WebhookType.POST_ROLLOUT, before.candidate, None), url, timeout)
        for name, url, timeout in _hooks(world, WebhookType.POST_ROLLOUT)
    ]


def requeue(world: World, state: State, calls: Sequence[WebhookCall]) -> timedelta | None:
    """When to look again if nothing wakes us earlier."""
    now = world.now
    waits: list[timedelta] = []
    if any(c.key.type is not WebhookType.ROLLBACK for c in calls):
        waits.append(WAIT_FOR_WEBHOOK)
    if any(c.key.type is WebhookType.ROLLBACK for c in calls) or state.reason is Reason.WEBHOOK_FAILED:
        waits.append(POLL_WEBHOOK)
    match state.phase:
        case Phase.PROGRESSING:
            step = _current(world, state)
            started = state.step_started_at or now
            if isinstance(step, Pause) and step.duration is not None:
                waits.append(started + step.duration - now)
            elif isinstance(step, Analyze) and state.analysis is not None:
                waits.append(judge.next_due(_spec(world), state.analysis) - now)
            else:
                waits.append(WAIT_FOR_READY)
                if _is_switch(world, state):
                    waits.append(started + timedelta(seconds=_blue_green_delay(world)) - now)
            if not world.candidate_ready(state):
                waits.append(started + world.deadline - now)
        case Phase.PROMOTING | Phase.ROLLING_BACK | Phase.PENDING | Phase.DEGRADED:
            waits.append(WAIT_FOR_READY)
        case _:
            pass
    if not waits:
        return None
    return max(min(waits), timedelta(seconds=1))


# ---------------------------------------------------------------------------------------------
# 6. decide


def decide(
    md: ModelDeployment,
    observed: Observed,
    *,
    now: datetime,
    owner_uid: str,
    serving_image: str,
    router: Router | None = None,
) -> Decision:
    """Plan one pass.

    `router` is the traffic router for `spec.rollout.traffic.provider` (`routers.router_for`).
    Without one (kube/ not yet wired to routers) only the steady state is planned and a new
    revision replaces the stable in place; with one, changes roll out by the strategy.
    """
    if router is None:
        return _without_router(md, observed, now=now, owner_uid=owner_uid, serving_image=serving_image)
    steps = rollout_steps(md.spec.rollout)
    world = World(md, observed, now, router, steps, tuple(router.problems(md)))
    before = State.of(md)
    state = _fold_measurements(world, before)
    for _ in range(MAX_TRANSITIONS):
        event = next_event(world, state)
        if event is None:
            break
        state = _fold_measurements(world, transition(world, state, event))
    state = _waiting_on_router(world, state)
    state = _health(state, _stable_view(observed.stable, state.stable), first=md.status.phase is None)
    desired, delete, split = desired_objects(world, state, owner_uid=owner_uid, serving_image=serving_image)
    calls = [*webhook_calls(world, state), *_post_rollout(world, before, state)]
    status = status_of(md, state, split, now=now)
    return Decision(
        desired=tuple(desired),
        delete=tuple(delete),
        status=status,
        notes=state.notes,
        requeue_after=requeue(world, state, calls),
        split=split,
        webhook_calls=tuple(calls),
    )


_STATE_OF: dict[Phase, ConditionType] = {
    Phase.HEALTHY: ConditionType.READY,
    Phase.ROLLED_BACK: ConditionType.STALLED,
    Phase.INVALID: ConditionType.STALLED,
}


def status_of(
    md: ModelDeployment, state: State, split: TrafficSplit, *, now: datetime
) -> ModelDeploymentStatus:
    """The whole next status: the state plus kstatus conditions.

    Ready only when healthy; Stalled when a human or a spec change is needed (rolled back,
    invalid, stable past its deadline); Reconciling otherwise (a rollout, a pause a human may
    lift, pods coming up)."""
    kind = _STATE_OF.get(state.phase, ConditionType.RECONCILING)
    if state.phase is Phase.DEGRADED and state.reason is Reason.PROGRESS_DEADLINE_EXCEEDED:
        kind = ConditionType.STALLED
    in_rollout = _candidate_exists(state)
    return ModelDeploymentStatus(
        observed_generation=md.metadata.generation,
        phase=state.phase,
        strategy=md.spec.rollout.strategy,
        message=state.message[:32768],
        stable_version=state.stable.model.version,
        stable_revision=revision_of(state.stable),
        stable=_stable_spec(md, state.stable),
        candidate_version=state.candidate_version if in_rollout else None,
        candidate_revision=state.candidate if in_rollout else None,
        current_step=state.step if in_rollout else None,
        step_started_at=state.step_started_at if in_rollout else None,
        weight=split.candidate,
        conditions=kstatus_conditions(
            md.status.conditions,
            state=kind,
            reason=state.reason,
            message=state.message[:32768],
            generation=md.metadata.generation,
            now=now,
        ),
        analysis=state.analysis,
        history=list(state.history),
        last_action=state.last_action,
    )


def _stable_spec(md: ModelDeployment, stable: RevisionSpec) -> RevisionSpec:
    """The stable's revision with the spec's current scale settings (they never start a rollout)."""
    runtime = stable.runtime.model_copy(
        update={"replicas": md.spec.runtime.replicas, "autoscaling": md.spec.runtime.autoscaling}
    )
    return stable.model_copy(update={"runtime": runtime})


# ---------------------------------------------------------------------------------------------
# Without a router: the steady state only (what kube/ gets until it passes `router=`)


def _without_router(
    md: ModelDeployment, observed: Observed, *, now: datetime, owner_uid: str, serving_image: str
) -> Decision:
    previous = md.status
    revision = revision_from_spec(md)
    children = tuple(desired_children(md, owner_uid=owner_uid, serving_image=serving_image))
    stable = _stable_view(observed.stable, revision)
    phase = previous.phase if previous.phase in STEADY_PHASES else Phase.PENDING
    state = _health(
        State(phase=phase or Phase.PENDING, stable=revision, history=tuple(previous.history)),
        stable,
        first=previous.phase is None,
    )
    kind = _STATE_OF.get(state.phase, ConditionType.RECONCILING)
    if state.phase is Phase.DEGRADED and state.reason is Reason.PROGRESS_DEADLINE_EXCEEDED:
        kind = ConditionType.STALLED
    status = ModelDeploymentStatus(
        observed_generation=md.metadata.generation,
        phase=state.phase,
        strategy=md.spec.rollout.strategy,
        message=state.message,
        stable_version=revision.model.version,
        stable_revision=revision_of(revision),
        stable=revision,
        weight=0,
        conditions=kstatus_conditions(
            previous.conditions,
            state=kind,
            reason=state.reason,
            message=state.message,
            generation=md.metadata.generation,
            now=now,
        ),
        history=previous.history,
    )
    requeue_after = None if state.phase is Phase.HEALTHY else WAIT_FOR_READY
    return Decision(
        desired=children, delete=(), status=status, notes=state.notes, requeue_after=requeue_after
    )
