"""The operator's own verdict on a spec the API server let through (e.g. an older CRD than the
operator): Ready=False/Stalled InvalidSpec with every problem named, one Warning event, and the
children left untouched so the running version keeps serving. A recording fake client stands in
for the API here; the real API paths are covered by tests/integration."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from rollwise.kube import reconcile as rec
from rollwise.settings import from_env

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def body(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "rollwise.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ns", "uid": "u1", "generation": 4, "resourceVersion": "9"},
        "spec": spec,
        "status": {"phase": "Healthy", "stableVersion": "1.0.0"},
    }


class Recorder:
    def __init__(self) -> None:
        self.status: list[tuple[str, str, dict[str, Any]]] = []
        self.events: list[Any] = []


def run(spec: dict[str, Any], monkeypatch: Any) -> tuple[Any, Recorder]:
    calls = Recorder()
    monkeypatch.setattr(
        rec, "patch_status", lambda api, ns, name, status: calls.status.append((ns, name, status))
    )
    monkeypatch.setattr(rec, "post_events", lambda api, b, notes: calls.events.extend(notes))
    monkeypatch.setattr(rec, "foreign_children", lambda *a, **k: [])  # nothing else owns a child
    applied: list[Any] = []
    monkeypatch.setattr(rec, "apply_objects", lambda api, desired, live: applied.extend(desired) or [])
    decision = asyncio.run(
        rec.reconcile(
            object(),  # type: ignore[arg-type]  # never called: every I/O function is recorded above
            body(spec),
            [],
            settings=from_env({}),
            memory=rec.DaemonState(),
            now=NOW,
        )
    )
    assert applied == []
    return decision, calls


def test_an_invalid_spec_stalls_with_every_problem_and_touches_no_child(monkeypatch: Any) -> None:
    spec = {
        "model": {"name": "iris", "version": "2.0.0", "uri": "ftp://x/model.joblib", "format": "sklearn"},
        "runtime": {"replicas": 2, "autoscaling": {"maxReplicas": 3, "cpuUtilization": 50}},
    }
    decision, calls = run(spec, monkeypatch)
    assert decision is None
    ((ns, name, status),) = calls.status
    assert (ns, name) == ("ns", "iris")
    assert status["phase"] == "Invalid"
    assert status["observedGeneration"] == 4
    assert status["stableVersion"] == "1.0.0"  # what serves is still reported
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (stalled["status"], stalled["reason"], ready["status"]) == ("True", "InvalidSpec", "False")
    assert "spec.model.uri" in stalled["message"]
    assert "spec.runtime.replicas" in stalled["message"] or "spec.model.sha256" in stalled["message"]
    (event,) = calls.events
    assert (event.type.value, event.reason.value) == ("Warning", "InvalidSpec")


def test_the_same_invalid_spec_is_not_written_twice(monkeypatch: Any) -> None:
    spec = {"model": {"name": "iris", "version": "2", "uri": "ftp://x", "format": "onnx"}}
    calls = Recorder()
    monkeypatch.setattr(rec, "patch_status", lambda api, ns, name, status: calls.status.append(status))
    monkeypatch.setattr(rec, "post_events", lambda api, b, notes: calls.events.extend(notes))
    monkeypatch.setattr(rec, "foreign_children", lambda *a, **k: [])  # nothing else owns a child
    memory = rec.DaemonState()
    for _ in range(3):
        asyncio.run(rec.reconcile(object(), body(spec), [], settings=from_env({}), memory=memory, now=NOW))  # type: ignore[arg-type]
    assert len(calls.status) == 1
    assert len(calls.events) == 1
