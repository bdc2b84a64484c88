"""kstatus conditions and bounded history: status values computed, never fetched.

kstatus (`kubernetes-sigs/cli-utils:pkg/kstatus`) reads `Reconciling` and `Stalled` as
"abnormal-true" conditions and `Ready` as the summary, so Argo CD, Flux and `kubectl wait
--for=condition=Ready` understand a ModelDeployment with no custom code. Exactly one of the three
is True at any time. `now` is an argument: this module never reads a clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rollwise.api.v1alpha1 import (
    HISTORY_LIMIT,
    Condition,
    ConditionStatus,
    ConditionType,
    HistoryEntry,
    Reason,
)

KSTATUS_TYPES = (ConditionType.READY, ConditionType.RECONCILING, ConditionType.STALLED)


def with_condition(conditions: Sequence[Condition], new: Condition) -> list[Condition]:
    """Replace the condition of `new.type`, keeping its `lastTransitionTime` when the status is
    unchanged (a transition time that moved on every pass would make every reconcile a write).
    Order: Ready, Reconciling, Stalled, then any others by type.
    """
    old = next((c for c in conditions if c.type == new.type), None)
    if old is not None and old.status == new.status:
        new = new.model_copy(update={"last_transition_time": old.last_transition_time})
    merged = [c for c in conditions if c.type != new.type] + [new]
    order = {t: i for i, t in enumerate(KSTATUS_TYPES)}
    return sorted(merged, key=lambda c: (order.get(c.type, len(order)), str(c.type)))


def kstatus_conditions(
    previous: Sequence[Condition],
    *,
    state: ConditionType,
    reason: Reason,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """The three kstatus conditions with `state` True and the other two False, all with `reason`.

    `state` Ready: serving as desired. Reconciling: working towards the spec (a rollout, a first
    deploy). Stalled: cannot progress without a change (invalid spec, deadline passed).
    """
    out = list(previous)
    for kind in KSTATUS_TYPES:
        status = ConditionStatus.TRUE if kind == state else ConditionStatus.FALSE
        out = with_condition(
            out,
            Condition(
                type=kind,
                status=status,
                reason=reason,
                message=message if kind == state else "",
                last_transition_time=now,
                observed_generation=generation,
            ),
        )
    return out


def condition_of(conditions: Sequence[Condition], kind: ConditionType) -> Condition | None:
    """The condition of that type, if present."""
    return next((c for c in conditions if c.type == kind), None)


def with_history(history: Sequence[HistoryEntry], entry: HistoryEntry) -> list[HistoryEntry]:
    """`entry` first, then the older entries, at most `HISTORY_LIMIT` (the CRD's maxItems)."""
    return [entry, *history][:HISTORY_LIMIT]
