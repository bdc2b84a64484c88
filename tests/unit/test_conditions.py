"""kstatus conditions and bounded history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rollwise.api.v1alpha1 import HISTORY_LIMIT, ConditionStatus, ConditionType, HistoryEntry, Reason
from rollwise.plan.conditions import condition_of, kstatus_conditions, with_history

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


@pytest.mark.parametrize(
    "state",
    [
        pytest.param(ConditionType.READY, id="ready"),
        pytest.param(ConditionType.RECONCILING, id="reconciling"),
        pytest.param(ConditionType.STALLED, id="stalled"),
    ],
)
def test_exactly_one_kstatus_condition_is_true(state: ConditionType) -> None:
    conds = kstatus_conditions([], state=state, reason=Reason.PROGRESSING, message="m", generation=3, now=T0)
    assert [(c.type, c.status) for c in conds] == [
        (t, ConditionStatus.TRUE if t == state else ConditionStatus.FALSE)
        for t in (ConditionType.READY, ConditionType.RECONCILING, ConditionType.STALLED)
    ]
    assert {c.observed_generation for c in conds} == {3}
    assert [c.message for c in conds if c.status == ConditionStatus.TRUE] == ["m"]


def test_an_unchanged_status_keeps_its_transition_time_so_an_idle_pass_writes_nothing() -> None:
    first = kstatus_conditions(
        [], state=ConditionType.READY, reason=Reason.AVAILABLE, message="ok", generation=1, now=T0
    )
    again = kstatus_conditions(
        first, state=ConditionType.READY, reason=Reason.AVAILABLE, message="ok", generation=1, now=T1
    )
    assert again == first


def test_a_changed_status_moves_its_transition_time() -> None:
    first = kstatus_conditions(
        [], state=ConditionType.READY, reason=Reason.AVAILABLE, message="ok", generation=1, now=T0
    )
    later = kstatus_conditions(
        first, state=ConditionType.STALLED, reason=Reason.INVALID_SPEC, message="bad", generation=2, now=T1
    )
    ready = condition_of(later, ConditionType.READY)
    stalled = condition_of(later, ConditionType.STALLED)
    assert ready is not None and stalled is not None
    assert (ready.status, ready.last_transition_time) == (ConditionStatus.FALSE, T1)
    assert (stalled.status, stalled.reason, stalled.message) == (
        ConditionStatus.TRUE,
        Reason.INVALID_SPEC,
        "bad",
    )


def test_conditions_serialize_in_kubernetes_form() -> None:
    [ready, *_] = kstatus_conditions(
        [], state=ConditionType.READY, reason=Reason.AVAILABLE, message="ok", generation=1, now=T0
    )
    assert ready.model_dump(mode="json") == {
        "type": "Ready",
        "status": "True",
        "reason": "Available",
        "message": "ok",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 1,
    }


def entry(i: int) -> HistoryEntry:
    return HistoryEntry(
        version=f"v{i}", revision=f"r{i}", outcome=Reason.PROMOTED, finished_at=T0 + timedelta(seconds=i)
    )


@given(st.integers(0, 30))
def test_history_keeps_the_newest_entries_first_within_the_crd_bound(n: int) -> None:
    history: list[HistoryEntry] = []
    for i in range(n):
        history = with_history(history, entry(i))
    assert len(history) == min(n, HISTORY_LIMIT)
    assert [h.version for h in history] == [f"v{i}" for i in range(n - 1, max(n - HISTORY_LIMIT, 0) - 1, -1)]
