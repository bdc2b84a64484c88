"""The ModelDeployment state machine: (spec, status, observed, now, router) -> Decision.

Pure: no I/O, no clock, no environment. Every pass reads the rollout's position from the status
(`state.State`), looks at the observed world (`state.World`), and applies transitions until none
fires; the desired children (`desired.desired_objects`), the webhook calls (`gates`) and the status
(`status.status_of`) are then derived from the resulting state alone. So an operator killed
mid-step resumes at the same step, and planning again from the state our own decision produced asks
for no change.

The machine in three modules: `state.py` (where a rollout is), `triggers.py` (what can happen
to it; `next_trigger` finds the first that applies) and this one:
1. `transition`: (phase, trigger) -> the next state. Every phase change of a rollout is made there
   or by the helper it calls for that transition (`_start`, `_enter`, `_promote`, `_rollback`, ...).
   Two other places set a phase, on purpose: `_health`, because the steady phases (Pending,
   Healthy, Degraded) follow the stable Deployment's health with no trigger of their own; and
   `status.invalid_status`, for a manifest that does not parse, when there is no state to move.
2. `decide`: the loop tying them together.

Promotion is Flagger's: the stable Deployment is updated to the candidate's revision while the
candidate keeps its share, and only once the stable runs it does traffic return to the stable and
the candidate go away. Abort and failure route 100 % to stable at once and scale the candidate to
zero; its Deployment is kept (at 0) until the spec moves on, so its events stay inspectable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from rollwise.api.actions import ACTION_ANNOTATION, Action, Request
from rollwise.api.v1alpha1 import (
    BacktestPhase,
    HistoryEntry,
    InconclusivePolicy,
    ModelDeployment,
    Phase,
    Reason,
    RevisionSpec,
    Verdict,
    WebhookType,
)
from rollwise.plan import analysis, backtest, monitoring, segments
from rollwise.plan.conditions import with_history
from rollwise.plan.decision import Decision, EventType, WebhookCall
from rollwise.plan.desired import desired_objects
from rollwise.plan.gates import degraded_calls, post_rollout_calls, webhook_calls
from rollwise.plan.observed import Observed, TrackState
from rollwise.plan.revision import revision_from_spec, revision_of
from rollwise.plan.router import Router
from rollwise.plan.state import (
    ROLLOUT_PHASES,
    STEADY_PHASES,
    State,
    World,
    blue_green_delay,
    current_step,
    is_switch,
    required_analysis_spec,
    routed_split,
)
from rollwise.plan.status import status_of
from rollwise.plan.steps import Analyze, Pause, describe_step, rollout_steps
from rollwise.plan.triggers import (
    Act,
    Backtested,
    Degraded,
    GateFailed,
    Invalid,
    Judged,
    NewRevision,
    Promoted,
    Revalidated,
    Reverted,
    RollbackAsked,
    Settled,
    Started,
    StepDone,
    Stuck,
    Trigger,
    next_trigger,
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


# ---------------------------------------------------------------------------------------------
# Transitions


def transition(world: World, state: State, trigger: Trigger) -> State:
    """The next state for (phase, trigger): a spec change applies in any phase, a verdict and the
    rollout's progress only in the phase that waits for them; anything else changes nothing."""
    match trigger:
        case Invalid() | Revalidated() | Act() | NewRevision() | Reverted():
            return _spec_changed(world, state, trigger)
        case Judged():
            return _judged(world, state, trigger)
        case Backtested():
            return _backtested(world, state, trigger)
        case Degraded(message=why):
            return _degraded(world, state, why)
        case _:
            return _progressed(world, state, trigger)


def _spec_changed(
    world: World, state: State, trigger: Invalid | Revalidated | Act | NewRevision | Reverted
) -> State:
    now = world.now
    match (state.phase, trigger):
        case (_, Invalid(problems=problems)):
            return _invalid(state, "; ".join(problems), now)
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
        case _:
            return state


def _invalid(state: State, message: str, now: datetime) -> State:
    """The router cannot do what the spec asks: any rollout ends, the stable serves on."""
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


def _judged(world: World, state: State, judged: Judged) -> State:
    """An analysis verdict: pass moves on; fail rolls back; inconclusive by `inconclusivePolicy`."""
    if state.phase is not Phase.PROGRESSING:
        return state
    why = judged.reason
    match judged.verdict:
        case Verdict.SUCCESSFUL:
            passed = state.note(EventType.NORMAL, Reason.ANALYSIS_RUNNING, f"analysis passed: {why}")
            return _enter(world, passed, (state.step or 0) + 1)
        case Verdict.INCONCLUSIVE if (
            required_analysis_spec(world).inconclusive_policy is InconclusivePolicy.PAUSE
        ):
            message = f"analysis inconclusive, paused for a human (resume, promote or abort): {why}"
            return replace(
                state, phase=Phase.PAUSED, reason=Reason.ANALYSIS_INCONCLUSIVE, message=message
            ).note(EventType.WARNING, Reason.ANALYSIS_INCONCLUSIVE, message)
        case Verdict.INCONCLUSIVE if (
            required_analysis_spec(world).inconclusive_policy is InconclusivePolicy.PROCEED
        ):
            message = f"analysis inconclusive, going on as inconclusivePolicy proceed says: {why}"
            noted = state.note(EventType.WARNING, Reason.ANALYSIS_INCONCLUSIVE, message)
            return _enter(world, noted, (state.step or 0) + 1)
        case Verdict.INCONCLUSIVE:
            return _rollback(world, state, Reason.ANALYSIS_INCONCLUSIVE, f"analysis inconclusive: {why}")
        case _:
            return _rollback(world, state, Reason.ANALYSIS_FAILED, f"analysis failed: {why}")


def _progressed(world: World, state: State, trigger: Trigger) -> State:
    match (state.phase, trigger):
        case (Phase.PROGRESSING, Started()):
            return _enter(world, state, 0)
        case (Phase.PROGRESSING, StepDone()):
            return _enter(world, state, (state.step or 0) + 1)
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
            done = _history(state, Reason.PROMOTED, f"{state.candidate_version} is the new stable", world.now)
            return _steady(done, f"promoted {state.candidate_version}").note(
                EventType.NORMAL, Reason.PROMOTED, f"promoted {state.candidate_version} to stable"
            )
        case (Phase.ROLLING_BACK, Settled()):
            message = f"rolled back; the stable serves all traffic ({state.message})"
            return replace(state, phase=Phase.ROLLED_BACK, message=message[:32768])
        case _:
            return state


def _backtested(world: World, state: State, done: Backtested) -> State:
    """A backtest that did not pass. Shown worse: rolled back, before any traffic. Without a
    verdict (its Job failed, it timed out, too few rows), never a pass: `inconclusivePolicy` fail
    rolls back, pause waits for a human (promote goes on without it, abort rolls back); proceed
    never gets here (`triggers.backtest_holds` lets it through)."""
    if state.phase is not Phase.PROGRESSING:
        return state
    why = done.message
    if done.phase is BacktestPhase.FAILED:
        return _rollback(world, state, Reason.BACKTEST_FAILED, f"backtest failed: {why}")
    spec = world.md.spec.rollout.backtest
    if spec is not None and spec.inconclusive_policy is InconclusivePolicy.PAUSE:
        message = f"backtest inconclusive, paused for a human (promote skips it, abort rolls back): {why}"
        return replace(
            state, phase=Phase.PAUSED, reason=Reason.BACKTEST_INCONCLUSIVE, message=message[:32768]
        ).note(EventType.WARNING, Reason.BACKTEST_INCONCLUSIVE, message[:4096])
    return _rollback(world, state, Reason.BACKTEST_INCONCLUSIVE, f"backtest inconclusive: {why}")


def _degraded(world: World, state: State, why: str) -> State:
    """Monitoring found the promoted stable degraded: back to the stable before it, as a rollback
    of the degraded revision (history, Events, `kubectl rollwise retry` to try it again)."""
    if state.previous_stable is None:
        return state
    bad, back = state.stable, state.previous_stable
    returning = replace(
        state,
        candidate=revision_of(bad),
        candidate_version=bad.model.version,
        stable=back,
        previous_stable=None,
        monitoring=None,
        step=None,
        step_started_at=None,
        analysis=None,
    )
    message = f"{bad.model.version} degraded after promotion, back to {back.model.version}: {why}"
    return _rollback(world, returning, Reason.MODEL_DEGRADED, message[:4096])


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
        case (Phase.PAUSED, Action.RESUME) if state.reason is Reason.BACKTEST_INCONCLUSIVE:
            return state.note(
                EventType.NORMAL,
                state.reason,
                "resume cannot rerun a backtest of the same revision; promote goes on without it, abort "
                "rolls back",
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
        backtest=None,
        reason=Reason.PROGRESSING,
        message=f"rolling out {version} ({world.md.spec.rollout.strategy})",
    )
    started = started.note(
        EventType.NORMAL, Reason.PROGRESSING, f"rolling out {version} as candidate ({revision_of(rev)})"
    )
    spec = world.md.spec.rollout.backtest
    if spec is None:
        return started
    bt = backtest.started(world.md, revision_of(rev), world.now)
    problem = backtest.pinned_problem("stable", state.stable.model)
    if problem is not None:
        bt = bt.model_copy(
            update={"phase": BacktestPhase.INCONCLUSIVE, "finished_at": world.now, "message": problem}
        )
        return replace(started, backtest=bt)
    message = (
        f"backtest: {version} and the stable {state.stable.model.version} score {spec.dataset.uri} "
        f"(Job {bt.job_name}); no traffic reaches {version} until it passes"
    )
    return replace(started, backtest=bt, reason=Reason.BACKTEST_RUNNING, message=message).note(
        EventType.NORMAL, Reason.BACKTEST_RUNNING, message
    )


def _enter(world: World, state: State, index: int) -> State:
    """Begin step `index`; past the last step, promotion begins."""
    if index >= len(world.steps):
        return _promote(world, state)
    step = world.steps[index]
    started = None
    if isinstance(step, Analyze):
        started = analysis.start(required_analysis_spec(world), step=index, now=world.now)
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
        analysis=started or state.analysis,
        reason=reason,
        message=message,
    ).note(EventType.NORMAL, reason, message)


def _waiting_on_router(world: World, state: State) -> State:
    """While a ready candidate's step is not yet routed, say what the router waits for (a Gateway
    rejecting the route, a missing VirtualService, old pods draining) instead of the bare step."""
    step = current_step(world, state)
    if (
        state.phase is not Phase.PROGRESSING
        or state.step is None
        or step is None
        or isinstance(step, (Pause, Analyze))
        or not world.candidate_ready(state)
        or world.routes(routed_split(world, state))
    ):
        return state
    why = world.router_message()
    base = f"step {state.step + 1}/{len(world.steps)}: {describe_step(step)}"
    return replace(state, message=f"{base}; waiting for the traffic router: {why}" if why else base)


def _resume(world: World, state: State) -> State:
    """Resume: past an indefinite pause step; restart an inconclusive analysis; otherwise carry
    on with the step, its clock restarted (an analysis keeps its tallies, rebased in time)."""
    step = current_step(world, state)
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
    running = state.analysis
    if isinstance(step, Analyze) and running is not None:
        spec = required_analysis_spec(world)
        rebased = world.now - analysis.taken(running) * timedelta(seconds=spec.interval_seconds)
        running = running.model_copy(update={"started_at": rebased})
    return replace(
        note,
        phase=Phase.PROGRESSING,
        reason=Reason.ANALYSIS_RUNNING if isinstance(step, Analyze) else Reason.PROGRESSING,
        message=f"resumed at step {(state.step or 0) + 1}/{len(world.steps)}",
        step_started_at=world.now,
        analysis=running,
    )


def _promote(world: World, state: State) -> State:
    """The stable starts running the candidate's revision; the candidate keeps its share meanwhile."""
    message = f"promoting {state.candidate_version}: updating the stable Deployment"
    return replace(
        state,
        phase=Phase.PROMOTING,
        stable=revision_from_spec(world.md),
        previous_stable=state.stable,
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
    bt = state.backtest if state.backtest is not None and state.backtest.revision == state.candidate else None
    entry = HistoryEntry(
        version=state.candidate_version or "",
        revision=state.candidate,
        outcome=outcome,
        message=why[:4096],
        finished_at=now,
        backtest=backtest.history_line(bt),
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
    step = current_step(world, state)
    if (
        state.phase is not Phase.PROGRESSING
        or not isinstance(step, Analyze)
        or state.analysis is None
        or state.analysis.verdict is not Verdict.RUNNING
        or state.step is None
    ):
        return state
    spec = segments.resolved(world.md, required_analysis_spec(world))
    folded = analysis.record(
        spec, state.analysis, world.observed.measurements, step=state.step, count=step.count, bake=step.bake
    )
    if folded == state.analysis:
        return state
    return replace(state, analysis=folded)


def _fold_backtest(world: World, state: State) -> State:
    """Read the running backtest's Job and pods back (`backtest.backtest_status`); its verdict,
    when it changes, is an Event (a failure's also comes with the rollback it causes)."""
    spec, bt = world.md.spec.rollout.backtest, state.backtest
    if (
        spec is None
        or bt is None
        or bt.phase is not BacktestPhase.RUNNING
        or bt.revision != state.candidate
        or state.phase not in (Phase.PROGRESSING, Phase.PAUSED)
    ):
        return state
    job = next((j for j in world.observed.backtest_jobs if j.name == bt.job_name), None)
    pods = [p for p in world.observed.backtest_pods if job is not None and p.job == job.name]
    folded = backtest.backtest_status(spec, bt, job=job, pods=pods, now=world.now)
    if folded == bt:
        return state
    out = replace(state, backtest=folded)
    if folded.phase is BacktestPhase.PASSED:
        return out.note(EventType.NORMAL, Reason.BACKTEST_PASSED, f"backtest passed: {folded.message}"[:4096])
    if folded.phase is BacktestPhase.INCONCLUSIVE and spec.inconclusive_policy is InconclusivePolicy.PROCEED:
        message = f"backtest inconclusive, going on as inconclusivePolicy proceed says: {folded.message}"
        return out.note(EventType.WARNING, Reason.BACKTEST_INCONCLUSIVE, message[:4096])
    return out


WATCHED = frozenset({Phase.HEALTHY, Phase.ROLLED_BACK})
"""Phases in which no candidate takes traffic and `spec.monitoring` watches the stable."""


def _fold_monitoring(world: World, state: State) -> State:
    """Watch the stable (a new stable revision starts over) and fold the look the I/O layer took;
    a verdict that changes is an Event."""
    spec = world.md.spec.monitoring
    if spec is None:
        return replace(state, monitoring=None) if state.monitoring is not None else state
    if state.phase not in WATCHED or not world.stable_ready(state):
        return state
    mon = state.monitoring
    revision = revision_of(state.stable)
    if mon is None or mon.revision != revision:
        return replace(state, monitoring=monitoring.begin(revision, world.now, spec))
    asked = world.md.status.monitoring
    if asked is None or asked.revision != revision:
        return state  # the answers, if any, are about another revision's looks
    folded = monitoring.record(segments.resolved(world.md, spec), mon, world.observed.measurements)
    if folded == mon:
        return state
    out = replace(state, monitoring=folded)
    version = state.stable.model.version
    if folded.healthy is False and mon.healthy is not False:
        out = out.note(EventType.WARNING, Reason.MODEL_DEGRADED, f"{version} degraded: {folded.message}")
    elif folded.healthy is True and mon.healthy is False:
        out = out.note(EventType.NORMAL, Reason.MODEL_HEALTHY, f"{version} healthy again: {folded.message}")
    return out


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
    if phase != state.phase or first:  # `first`: a new object gets an Trigger for its first phase
        kind = EventType.NORMAL if phase in (Phase.HEALTHY, Phase.PENDING) else EventType.WARNING
        out = out.note(kind, reason, f"{phase.value}: {message}")
    return out


# ---------------------------------------------------------------------------------------------
# decide


def _next_look(world: World, state: State) -> list[timedelta]:
    """Time to monitoring's next look, while it watches."""
    spec = world.md.spec.monitoring
    if spec is None or state.monitoring is None or state.phase not in WATCHED:
        return []
    return [monitoring.next_due(spec, state.monitoring) - world.now]


def _backtest_timeout(world: World, state: State) -> list[timedelta]:
    """Time to a running backtest's `timeoutSeconds`."""
    bt, spec = state.backtest, world.md.spec.rollout.backtest
    if bt is None or spec is None or bt.phase is not BacktestPhase.RUNNING:
        return []
    return [bt.started_at + timedelta(seconds=spec.timeout_seconds) - world.now]


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
            step = current_step(world, state)
            started = state.step_started_at or now
            if isinstance(step, Pause) and step.duration is not None:
                waits.append(started + step.duration - now)
            elif isinstance(step, Analyze) and state.analysis is not None:
                waits.append(analysis.next_due(required_analysis_spec(world), state.analysis) - now)
            else:
                waits.append(WAIT_FOR_READY)
                if is_switch(world, state):
                    waits.append(started + timedelta(seconds=blue_green_delay(world)) - now)
            if not world.candidate_ready(state):
                waits.append(started + world.deadline - now)
            waits.extend(_backtest_timeout(world, state))
        case Phase.PROMOTING | Phase.ROLLING_BACK | Phase.PENDING | Phase.DEGRADED:
            waits.append(WAIT_FOR_READY)
        case _:
            pass
    waits.extend(_next_look(world, state))
    if not waits:
        return None
    return max(min(waits), timedelta(seconds=1))


def decide(
    md: ModelDeployment,
    observed: Observed,
    *,
    now: datetime,
    owner_uid: str,
    serving_image: str,
    router: Router,
    batch_image: str | None = None,
) -> Decision:
    """Plan one pass; `router` is the traffic router for `spec.rollout.traffic.provider`
    (`routers.router_for`); `batch_image` runs a backtest without `image` (default: the serving
    image)."""
    steps = rollout_steps(md.spec.rollout)
    world = World(md, observed, now, router, steps, (*router.problems(md), *analysis.query_problems(md)))
    before = State.of(md)
    state = _fold_monitoring(world, _fold_backtest(world, _fold_measurements(world, before)))
    for _ in range(MAX_TRANSITIONS):
        trigger = next_trigger(world, state)
        if trigger is None:
            break
        state = _fold_backtest(world, _fold_measurements(world, transition(world, state, trigger)))
    state = _waiting_on_router(world, state)
    state = _health(state, _stable_view(observed.stable, state.stable), first=md.status.phase is None)
    state = _fold_monitoring(world, state)
    desired, delete, split = desired_objects(world, state, owner_uid=owner_uid, serving_image=serving_image)
    jobs, stale_jobs = backtest.backtest_objects(
        world, state, owner_uid=owner_uid, batch_image=batch_image or serving_image
    )
    desired, delete = [*desired, *jobs], [*delete, *stale_jobs]
    calls = [
        *webhook_calls(world, state),
        *post_rollout_calls(world, before, state),
        *degraded_calls(world, before, state),
    ]
    status = status_of(md, state, split, now=now, answers=observed.webhooks)
    return Decision(
        desired=tuple(desired),
        delete=tuple(delete),
        status=status,
        notes=state.notes,
        requeue_after=requeue(world, state, calls),
        split=split,
        webhook_calls=tuple(calls),
    )
