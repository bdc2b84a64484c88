"""The next status: the rollout's state written out with its kstatus conditions, and the status
of a manifest that does not parse (no state can be built from it)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from rollwise.api.v1alpha1 import (
    Condition,
    ConditionStatus,
    ConditionType,
    ModelDeployment,
    ModelDeploymentStatus,
    PassedGate,
    Phase,
    Reason,
    RevisionSpec,
    WebhookType,
)
from rollwise.plan.conditions import kstatus_conditions, with_condition
from rollwise.plan.monitoring import summary
from rollwise.plan.observed import WebhookResult
from rollwise.plan.revision import revision_of
from rollwise.plan.split import TrafficSplit
from rollwise.plan.state import State, candidate_exists

_STATE_OF: dict[Phase, ConditionType] = {
    Phase.HEALTHY: ConditionType.READY,
    Phase.ROLLED_BACK: ConditionType.STALLED,
    Phase.INVALID: ConditionType.STALLED,
}


GATE_TYPES = frozenset({WebhookType.PRE_ROLLOUT, WebhookType.STEP, WebhookType.CONFIRM_PROMOTION})
"""The webhooks whose 2xx opens a gate, and so is kept in status (a rollback poll's is acted on at
once, a postRollout notice is sent once)."""


def passed_gates(state: State, answers: Sequence[WebhookResult]) -> list[PassedGate]:
    """The gates that answered 2xx about the candidate of `state`, at its current step or later."""
    if state.candidate is None:
        return []
    step = state.step or 0
    return [
        PassedGate(name=a.key.name, type=a.key.type, revision=a.key.revision, step=a.key.step)
        for a in answers
        if a.ok
        and a.key.type in GATE_TYPES
        and a.key.revision == state.candidate
        and (a.key.step is None or a.key.step >= step)
    ][:64]


def status_of(
    md: ModelDeployment,
    state: State,
    split: TrafficSplit,
    *,
    now: dt.datetime,
    answers: Sequence[WebhookResult] = (),
) -> ModelDeploymentStatus:
    """The whole next status: the state plus kstatus conditions.

    Ready only when healthy; Stalled when a human or a spec change is needed (rolled back,
    invalid, stable past its deadline); Reconciling otherwise (a rollout, a pause a human may
    lift, pods coming up)."""
    kind = _STATE_OF.get(state.phase, ConditionType.RECONCILING)
    if state.phase is Phase.DEGRADED and state.reason is Reason.PROGRESS_DEADLINE_EXCEEDED:
        kind = ConditionType.STALLED
    in_rollout = candidate_exists(state)
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
        conditions=_model_healthy(
            md,
            state,
            kstatus_conditions(
                md.status.conditions,
                state=kind,
                reason=state.reason,
                message=state.message[:32768],
                generation=md.metadata.generation,
                now=now,
            ),
            now,
        ),
        analysis=state.analysis,
        history=list(state.history),
        previous_stable=state.previous_stable,
        monitoring=state.monitoring if md.spec.monitoring is not None else None,
        backtest=state.backtest,
        passed_gates=passed_gates(state, answers) if in_rollout else [],
        last_action=state.last_action,
    )


def _model_healthy(
    md: ModelDeployment, state: State, conditions: list[Condition], now: dt.datetime
) -> list[Condition]:
    """The `ModelHealthy` condition with `spec.monitoring`: monitoring's verdict on the stable
    model (Unknown before the first look); without monitoring, no such condition."""
    if md.spec.monitoring is None:
        return [c for c in conditions if c.type is not ConditionType.MODEL_HEALTHY]
    mon = state.monitoring
    if mon is None or mon.healthy is None:
        status, reason = ConditionStatus.UNKNOWN, Reason.MONITORING
    elif mon.healthy:
        status, reason = ConditionStatus.TRUE, Reason.MODEL_HEALTHY
    else:
        status, reason = ConditionStatus.FALSE, Reason.MODEL_DEGRADED
    message = (
        summary(mon) if mon is not None else "monitoring starts once the stable is ready and no rollout runs"
    )
    return with_condition(
        conditions,
        Condition(
            type=ConditionType.MODEL_HEALTHY,
            status=status,
            reason=reason,
            message=message,
            last_transition_time=now,
            observed_generation=md.metadata.generation,
        ),
    )


def _stable_spec(md: ModelDeployment, stable: RevisionSpec) -> RevisionSpec:
    """The stable's revision with the spec's current scale settings (they never start a rollout)."""
    runtime = stable.runtime.model_copy(
        update={"replicas": md.spec.runtime.replicas, "autoscaling": md.spec.runtime.autoscaling}
    )
    return stable.model_copy(update={"runtime": runtime})


def invalid_status(
    body: Mapping[str, Any], problems: Sequence[str], now: dt.datetime
) -> ModelDeploymentStatus:
    """Ready=False/Stalled, reason InvalidSpec: children are left untouched, so stable serves on."""
    previous = ModelDeploymentStatus.model_validate(body.get("status") or {}, strict=False)
    message = "; ".join(problems)
    generation = (body.get("metadata") or {}).get("generation")
    return previous.model_copy(
        update={
            "observed_generation": generation,
            "phase": Phase.INVALID,
            "message": message[:32768],
            "conditions": kstatus_conditions(
                previous.conditions,
                state=ConditionType.STALLED,
                reason=Reason.INVALID_SPEC,
                message=message[:32768],
                generation=generation,
                now=now,
            ),
        }
    )
