"""A pass planned from a body that predates our own last status write must write nothing.

Kopf delivers our own status write to the daemon's body an event later (after its batching
window); a child's event can wake the daemon before that. Planning from the older status at a
later `now` would redo the last transition: the same step entered again, with a new start time
and a second Event (the scale benchmark saw it in one of five rollouts). A recording fake client
stands in for the API; tests/integration/test_ha.py runs many rollouts at once for real."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from rollwise.kube import reconcile as rec
from rollwise.settings import from_env

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
INVALID = {"model": {"name": "iris", "version": "2", "uri": "ftp://x", "format": "onnx"}}


def body(resource_version: str, status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "rollwise.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": "iris",
            "namespace": "ns",
            "uid": "u1",
            "generation": 2,
            "resourceVersion": resource_version,
        },
        "spec": INVALID,
        "status": status,
    }


class FakeApi:
    """Status patches bump the resourceVersion like the API server does (or not, for a no-op)."""

    def __init__(self) -> None:
        self.version = 9
        self.writes: list[dict[str, Any]] = []
        self.events: list[Any] = []

    def patch_status(self, api: object, ns: str, name: str, status: dict[str, Any]) -> str:
        self.writes.append(status)
        self.version += 1
        return str(self.version)


def one_pass(memory: rec.DaemonState, b: dict[str, Any], now: dt.datetime) -> object:
    return asyncio.run(rec.reconcile(object(), b, [], settings=from_env({}), memory=memory, now=now))  # type: ignore[arg-type]  # never called: the I/O functions are faked


def passes(monkeypatch: Any, bodies: list[dict[str, Any]], *, unchanged: bool = False) -> FakeApi:
    api = FakeApi()
    if unchanged:
        monkeypatch.setattr(rec, "patch_status", lambda a, ns, n, s: api.writes.append(s) or "9")
    else:
        monkeypatch.setattr(rec, "patch_status", api.patch_status)
    monkeypatch.setattr(rec, "post_events", lambda a, b, notes: api.events.extend(notes))
    monkeypatch.setattr(rec, "foreign_children", lambda *a, **k: [])  # nothing else owns a child
    memory = rec.DaemonState()
    for i, b in enumerate(bodies):
        now = NOW + dt.timedelta(seconds=i)  # later each pass: a replanned status differs in its times
        one_pass(memory, b, now)
    return api


def test_a_body_that_lags_our_write_is_not_planned_from(monkeypatch: Any) -> None:
    stale = body("9", {"phase": "Healthy"})
    api = passes(monkeypatch, [stale, stale, stale])
    assert len(api.writes) == 1 and len(api.events) == 1


def test_once_the_body_catches_up_passes_resume(monkeypatch: Any) -> None:
    api = FakeApi()
    monkeypatch.setattr(rec, "post_events", lambda a, b, notes: api.events.extend(notes))
    monkeypatch.setattr(rec, "foreign_children", lambda *a, **k: [])  # nothing else owns a child
    monkeypatch.setattr(rec, "patch_status", api.patch_status)
    memory = rec.DaemonState()
    asyncio.run(
        rec.reconcile(
            object(), body("9", {"phase": "Healthy"}), [], settings=from_env({}), memory=memory, now=NOW
        )
    )  # type: ignore[arg-type]
    (written,) = api.writes
    caught_up = body("10", written)
    later = NOW + dt.timedelta(seconds=5)
    decision = asyncio.run(
        rec.reconcile(object(), caught_up, [], settings=from_env({}), memory=memory, now=later)
    )  # type: ignore[arg-type]
    assert decision is None  # invalid spec: nothing to decide, and nothing new to write
    assert len(api.writes) == 1
    assert memory.behind_own_write(caught_up) is False
    # Someone else changes the status (e.g. a human clears it): we write again from the new body.
    asyncio.run(
        rec.reconcile(
            object(), body("11", {"phase": "Healthy"}), [], settings=from_env({}), memory=memory, now=later
        )
    )  # type: ignore[arg-type]
    assert len(api.writes) == 2


def test_a_write_that_changed_nothing_does_not_hold_the_next_pass(monkeypatch: Any) -> None:
    """A patch that leaves the resourceVersion as it was produces no event to wait for."""
    stale = body("9", {"phase": "Healthy"})
    api = passes(monkeypatch, [stale, stale], unchanged=True)
    assert len(api.writes) == 2
