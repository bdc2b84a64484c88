"""The ModelDeployment state machine: (spec, status, observed, now) -> Decision.

Pure: no I/O, no clock, no environment. Every pass rebuilds the status from the spec, the
previous status and the observed world, so planning again from the state our own decision
produced asks for no change (an idle reconcile writes nothing).

This module holds the steady state: one stable version serving. A changed model or runtime
(a new revision) is where the rollout strategies take over (issue 5); until they land, a new
revision replaces the stable in place through the Deployment's own rolling update, which never
takes a ready pod down before its replacement is ready (maxUnavailable 0).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from rollwise.api.v1alpha1 import (
    ConditionType,
    ModelDeployment,
    ModelDeploymentStatus,
    Phase,
    Reason,
    RevisionSpec,
)
from rollwise.plan.conditions import kstatus_conditions
from rollwise.plan.decision import Decision, EventType, Note
from rollwise.plan.desired import desired_children, revision_from_spec, revision_of
from rollwise.plan.observed import Observed, TrackState

WAIT_FOR_READY = timedelta(seconds=5)
"""How soon to look again while pods come up; child events usually wake us earlier."""


def stable_revision(md: ModelDeployment) -> RevisionSpec:
    """What the stable track runs: the spec's model and runtime (steady state)."""
    return revision_from_spec(md)


def _why(stable: TrackState) -> str:
    return f": {stable.message}" if stable.message else ""


def _phase(previous: Phase | None, stable: TrackState) -> tuple[Phase, ConditionType, Reason, str]:
    """Phase, kstatus state, reason and message from the stable track's health."""
    match (previous, stable):
        case (_, TrackState(progress_deadline_exceeded=True)):
            return (
                Phase.DEGRADED,
                ConditionType.STALLED,
                Reason.PROGRESS_DEADLINE_EXCEEDED,
                f"the stable Deployment did not become ready in time: {stable.message or 'see its pods'}",
            )
        case (_, s) if s.available:
            return (
                Phase.HEALTHY,
                ConditionType.READY,
                Reason.AVAILABLE,
                (f"{s.available_replicas}/{s.replicas} replicas available"),
            )
        case (Phase.HEALTHY | Phase.DEGRADED, s) if s.exists and s.available_replicas == 0:
            return (
                Phase.DEGRADED,
                ConditionType.RECONCILING,
                Reason.STABLE_UNAVAILABLE,
                (f"no stable replica is available{_why(s)}"),
            )
        case _:
            return (
                Phase.PENDING,
                ConditionType.RECONCILING,
                Reason.WAITING_FOR_READY,
                (f"waiting for the stable Deployment to become ready{_why(stable)}"),
            )


def decide(
    md: ModelDeployment, observed: Observed, *, now: datetime, owner_uid: str, serving_image: str
) -> Decision:
    previous = md.status
    revision = stable_revision(md)
    children = tuple(desired_children(md, owner_uid=owner_uid, serving_image=serving_image))
    # The stable only counts as ready once it runs the revision we want.
    stable = observed.stable
    if stable.revision != revision_of(revision):
        stable = TrackState(exists=stable.exists, replicas=stable.replicas, message=stable.message)
    phase, state, reason, message = _phase(previous.phase, stable)
    status = ModelDeploymentStatus(
        observed_generation=md.metadata.generation,
        phase=phase,
        strategy=md.spec.rollout.strategy,
        message=message,
        stable_version=revision.model.version,
        stable_revision=revision_of(revision),
        stable=revision,
        weight=0,
        conditions=kstatus_conditions(
            previous.conditions,
            state=state,
            reason=reason,
            message=message,
            generation=md.metadata.generation,
            now=now,
        ),
        history=previous.history,
    )
    notes: tuple[Note, ...] = ()
    if phase != previous.phase:
        kind = EventType.NORMAL if phase in (Phase.HEALTHY, Phase.PENDING) else EventType.WARNING
        notes = (Note(kind, reason, f"{phase.value}: {message}"),)
    requeue = None if phase == Phase.HEALTHY else WAIT_FOR_READY
    return Decision(desired=children, delete=(), status=status, notes=notes, requeue_after=requeue)
