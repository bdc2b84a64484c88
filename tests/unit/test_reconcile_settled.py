"""The daemon skips a pass only when an event brought back nothing but our own status write.

`Memory.settled` is what the last pass planned from, with the status it wrote; `pass_inputs` is
what the next wake-up would plan from. Equal means planning again asks for no change (the planner
runs its transitions to a fixed point; its property tests hold it to that), so the pass is
skipped. Anything else must make them differ: a child's new version (including the children we
wrote: reading them back is what moves a step on), the spec or an annotation (even when it rides
on the version our status patch made), a route, a webhook answer. A fake API stamps
resourceVersions like the API server does; tests/integration runs the daemon for real."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml
from rollwise.api.v1alpha1 import WebhookType
from rollwise.kube import reconcile as rec
from rollwise.kube.apply import ObjectKey
from rollwise.plan.observed import WebhookKey, WebhookResult
from rollwise.settings import from_env

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
EXAMPLE = Path(__file__).parents[2] / "examples" / "iris-sklearn.yaml"


class FakeCluster:
    """Applies and status patches, each write a new resourceVersion, as the API server does."""

    def __init__(self) -> None:
        self.version = 10
        self.children: dict[ObjectKey, dict[str, Any]] = {}
        self.status: dict[str, Any] = {}

    def bump(self) -> str:
        self.version += 1
        return str(self.version)

    def apply_objects(self, api: object, desired: Any, live: Any) -> list[ObjectKey]:
        written = []
        for manifest in desired:
            obj = copy.deepcopy(dict(manifest))
            obj["metadata"]["resourceVersion"] = self.bump()
            self.children[ObjectKey.of(obj)] = obj
            written.append(ObjectKey.of(obj))
        return written

    def patch_status(self, api: object, ns: str, name: str, status: dict[str, Any]) -> str:
        self.status = {**self.status, **status}
        return self.bump()


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    fake = FakeCluster()
    monkeypatch.setattr(rec, "apply_objects", fake.apply_objects)
    monkeypatch.setattr(rec, "patch_status", fake.patch_status)
    monkeypatch.setattr(rec, "post_events", lambda api, body, notes: None)
    monkeypatch.setattr(rec, "foreign_children", lambda *a, **k: [])  # nothing else owns a child
    return fake


def body(version: str, status: dict[str, Any]) -> dict[str, Any]:
    md = yaml.safe_load(EXAMPLE.read_text())
    md["metadata"] |= {"namespace": "ml", "uid": "u1", "generation": 1, "resourceVersion": version}
    md["status"] = status
    return dict(md)


def one_pass(memory: rec.DaemonState, b: dict[str, Any], children: list[dict[str, Any]]) -> None:
    asyncio.run(rec.reconcile(object(), b, children, settings=from_env({}), memory=memory, now=NOW))  # type: ignore[arg-type]  # the I/O functions are faked


def test_our_status_write_coming_back_changes_nothing(cluster: FakeCluster) -> None:
    memory = rec.DaemonState()
    one_pass(memory, body("10", {}), [])
    assert cluster.children and cluster.status, "the first pass creates the children and a status"
    assert memory.settled == rec.pass_inputs(body(str(cluster.version), cluster.status), [], [], memory)


def test_anything_else_that_changed_is_planned_from(cluster: FakeCluster) -> None:
    memory = rec.DaemonState()
    one_pass(memory, body("10", {}), [])
    after = body(str(cluster.version), cluster.status)
    children = list(cluster.children.values())

    # The children we created come back: the planner has not read them yet.
    assert memory.settled != rec.pass_inputs(after, children, [], memory)
    # The next pass reads them; then the Deployment controller updates one's status.
    one_pass(memory, after, children)
    assert memory.settled == rec.pass_inputs(after, children, [], memory)
    moved = [dict(c, metadata={**c["metadata"], "resourceVersion": "99"}) for c in children[:1]]
    assert memory.settled != rec.pass_inputs(after, moved + children[1:], [], memory)
    # A child deleted by someone.
    assert memory.settled != rec.pass_inputs(after, children[1:], [], memory)
    # The spec changed, or a gate annotation was set, riding on the same version as our write.
    edited = copy.deepcopy(after)
    edited["spec"]["model"]["version"] = "2.0.0"
    assert memory.settled != rec.pass_inputs(edited, children, [], memory)
    annotated = copy.deepcopy(after)
    annotated["metadata"]["annotations"] = {"rollwise.dev/action": "pause"}
    assert memory.settled != rec.pass_inputs(annotated, children, [], memory)
    # Someone else rewrote a status field we own.
    cleared = copy.deepcopy(after)
    cleared["status"]["phase"] = None
    assert memory.settled != rec.pass_inputs(cleared, children, [], memory)
    # A route the spec names appears.
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute"}
    route["metadata"] = {"name": "web", "namespace": "ml", "resourceVersion": "5"}  # type: ignore[assignment]
    assert memory.settled != rec.pass_inputs(after, children, [route], memory)
    # A webhook answer arrives for the planner.
    answer = WebhookResult(WebhookKey("check", WebhookType.PRE_ROLLOUT, "r1", None), ok=True)
    memory.answers.keep(answer)
    assert memory.settled != rec.pass_inputs(after, children, [], memory)


def test_a_failed_pass_settles_nothing(cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    memory = rec.DaemonState()
    one_pass(memory, body("10", {}), [])
    assert memory.settled is not None

    def refuse(*args: Any) -> Any:
        raise RuntimeError("API server gone")

    monkeypatch.setattr(rec, "apply_objects", refuse)
    with pytest.raises(RuntimeError):
        one_pass(rec.DaemonState(), body("10", {}), [])
    failing = rec.DaemonState(settled=memory.settled)
    with pytest.raises(RuntimeError):
        one_pass(failing, body("10", {}), [])
    assert failing.settled is None, "the next event must plan again"
