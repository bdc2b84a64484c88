"""An operator killed mid-step: the rollout resumes at the same step, none repeated or skipped
(issue 5), also when the killed one was the leader of two replicas (issue 7). On kwok nodes.

All the state a rollout needs is in the ModelDeployment's status (currentStep, stepStartedAt,
analysis tallies), so whoever reconciles next carries on from there. What is checked, from the
operator's own Events and every status a watch saw:
- each step is entered exactly once, in order, and the rollout is promoted;
- the step that was running when the operator died keeps its start time (it is not restarted,
  so a pause is not lengthened and an analysis keeps the measurements it had);
- with two replicas (Kopf peering, distinct priorities): the follower writes nothing while the
  leader lives, and it finishes the rollout once the leader's keep-alive expires.

Each test starts its own operators (own identities, so the audit log tells them apart), in a
namespace outside this session's shared operator's glob.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch

from e2e import cluster as local_cluster
from tests.conftest import NAMESPACE_PREFIX, Cluster, create_test_namespace, wait_until
from tests.integration.conftest import (
    Operator,
    audit_offset,
    audit_writes,
    on_kwok,
    start_operator,
)
from tests.integration.test_operator import GROUP, PLURAL, VERSION, apply, get_md, wait_healthy

pytestmark = [pytest.mark.cluster, pytest.mark.kwok, pytest.mark.prometheus, pytest.mark.slow]

PAUSE_SECONDS = 20
"""The step the operator is killed in: long enough to kill it, wait, and have it taken over."""
LIFETIME_SECONDS = 8
"""Peering lifetime for the two-replica test: a dead leader is replaced within about this long."""
PEERING = "rollwise-ha-test"


def model_deployment(version: str, steps: list[dict[str, Any]], name: str = "ha") -> dict[str, Any]:
    """4 replicas, so 25 % and 50 % are one and two candidate pods."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "name": "iris",
                "version": version,
                "uri": "http://models.rollwise-system.svc/iris-v1.joblib",
                "sha256": "0f0a20f65cbf4da94225d9b38bfeb5560e49441f44f9a8126a7f0015374a49f8",
                "format": "sklearn",
            },
            "runtime": on_kwok({"replicas": 4}),
            "rollout": {
                "canary": {"steps": steps},
                "analysis": {
                    "intervalSeconds": 5,
                    "count": 3,
                    "minSampleCount": 0,
                    # A constant: what is tested is the operator carrying on (kwok pods serve nothing).
                    "metrics": [{"name": "up", "query": "vector(1)", "threshold": {"min": 0}}],
                },
            },
        },
    }


PAUSE_STEPS = [
    {"setWeight": 25},
    {"pause": {"durationSeconds": PAUSE_SECONDS}},
    {"setWeight": 50},
    {"pause": {"durationSeconds": 2}},
]
ANALYSIS_STEPS = [{"setWeight": 25}, {"analysis": {}}, {"setWeight": 50}]


@pytest.fixture
def ha_namespace(cluster: Cluster, crds: None, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace the session's shared operator does not watch (its glob is `<prefix>-*`)."""
    name = create_test_namespace(cluster, request, f"{NAMESPACE_PREFIX}ha-", 30)
    yield name
    # Our operators are gone by now: release Kopf's finalizer so the namespace can go.
    custom = client.CustomObjectsApi(cluster.api)
    for md in custom.list_namespaced_custom_object(GROUP, VERSION, name, PLURAL)["items"]:
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, name, PLURAL, md["metadata"]["name"], {"metadata": {"finalizers": None}}
        )
    cluster.core.delete_namespace(name)


def start_replica(tmp: Path, namespace: str, user: str, *, peering: str = "", priority: int = 0) -> Operator:
    """`rollwise-operator` as a process with its own identity, watching only `namespace`."""
    kubeconfig = local_cluster.user_kubeconfig(user, ("system:masters",))
    extra = {"peering_priority": str(priority)} if priority else {}
    return start_operator(
        tmp,
        kubeconfig,
        routers="replicas",
        watch=namespace,
        resync_seconds=30,
        name=user,
        peering=peering,
        peering_lifetime_seconds=str(LIFETIME_SECONDS),
        **extra,
    )


def peers(cluster: Cluster, namespace: str) -> dict[str, Any]:
    """Kopf's peering object: one status entry (priority, lifetime, last seen) per live replica."""
    obj = client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
        "kopf.dev", "v1", namespace, "kopfpeerings", PEERING
    )
    found: dict[str, Any] = obj.get("status") or {}
    return found


def kill(op: Operator) -> None:
    """SIGKILL: no goodbye to the peering object, no graceful shutdown."""
    op.proc.send_signal(signal.SIGKILL)
    op.proc.wait(10)


class Statuses:
    """Every distinct status of each ModelDeployment in the namespace, from a watch, while the
    block runs."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(cluster.api)
        self.namespace = namespace
        self.by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def seen(self) -> list[dict[str, Any]]:
        """The statuses of the ModelDeployment `ha` (the HA tests' one)."""
        return self.by_name["ha"]

    def __enter__(self) -> Statuses:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            w = watch.Watch()
            try:
                for event in w.stream(
                    self.custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    timeout_seconds=3,
                ):
                    status = event["object"].get("status") or {}
                    seen = self.by_name[event["object"]["metadata"]["name"]]
                    if not seen or seen[-1] != status:
                        seen.append(status)
                    if self._stop.is_set():
                        break
            except Exception:  # re-open a dropped watch; the next list catches up
                time.sleep(0.2)
            finally:
                w.stop()

    def starts(self, name: str = "ha") -> dict[int, set[str]]:
        """Step index -> every stepStartedAt seen while that step was current."""
        out: dict[int, set[str]] = defaultdict(set)
        for status in self.by_name[name]:
            if status.get("currentStep") is not None and status.get("phase") in ("Progressing", "Paused"):
                out[status["currentStep"]].add(status["stepStartedAt"])
        return out


def entered_steps(cluster: Cluster, namespace: str, name: str = "ha") -> list[int]:
    """Step numbers (1-based) the operator's Events say were entered, in time order."""
    # Raw JSON: the typed events.k8s.io model rejects controllers' Events that lack eventTime.
    resp = cluster.core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}", _preload_content=False
    )
    found = []
    for e in json.loads(resp.data)["items"]:
        message = e.get("message") or ""
        if e.get("involvedObject", {}).get("kind") == "ModelDeployment" and message.startswith("step "):
            found.append((e.get("eventTime") or "", int(message.split()[1].split("/")[0])))
    return [step for _, step in sorted(found)]


def start_rollout(cluster: Cluster, namespace: str, steps: list[dict[str, Any]]) -> None:
    result = apply(namespace, model_deployment("2.0.0", steps))
    assert result.returncode == 0, result.stderr


def wait_step(cluster: Cluster, namespace: str, step: int, timeout: float = 90) -> dict[str, Any]:
    def at_step() -> dict[str, Any] | None:
        md = get_md(cluster, namespace, "ha")
        status = md.get("status") or {}
        return status if status.get("currentStep") == step and status.get("phase") == "Progressing" else None

    result: dict[str, Any] = wait_until(f"step {step + 1} in progress", at_step, timeout, every=0.2)
    return result


def wait_promoted(cluster: Cluster, namespace: str, op: Operator, timeout: float = 180) -> dict[str, Any]:
    def promoted() -> dict[str, Any] | None:
        md = get_md(cluster, namespace, "ha")
        status = md.get("status") or {}
        return md if status.get("stableVersion") == "2.0.0" and status.get("phase") == "Healthy" else None

    try:
        result: dict[str, Any] = wait_until("promotion of 2.0.0", promoted, timeout)
    except AssertionError as err:
        status = json.dumps(get_md(cluster, namespace, "ha").get("status"), indent=1)[:3000]
        raise AssertionError(f"{err}\nstatus: {status}\noperator log:\n{op.log_tail(30)}") from None
    return result


def assert_resumed_in_place(
    cluster: Cluster, namespace: str, statuses: Statuses, interrupted: int, started: str, steps: int
) -> None:
    assert entered_steps(cluster, namespace) == list(range(1, steps + 1)), "a step was repeated or skipped"
    starts = statuses.starts()
    assert starts[interrupted] == {started}, f"step {interrupted + 1} was restarted: {starts[interrupted]}"
    assert all(len(s) == 1 for s in starts.values()), dict(starts)
    order = [s["currentStep"] for s in statuses.seen if s.get("currentStep") is not None]
    assert order == sorted(order), f"steps went back: {order}"


@pytest.mark.parametrize("steps", [PAUSE_STEPS, ANALYSIS_STEPS], ids=["during a pause", "during an analysis"])
def test_a_killed_operator_started_again_resumes_at_the_same_step(
    cluster: Cluster, ha_namespace: str, tmp_path: Path, steps: list[dict[str, Any]]
) -> None:
    namespace = ha_namespace
    interrupted = 1  # the pause or the analysis
    op = start_replica(tmp_path, namespace, "rollwise-operator-ha-single")
    try:
        assert apply(namespace, model_deployment("1.0.0", steps)).returncode == 0
        wait_healthy(cluster, namespace, "ha")
        with Statuses(cluster, namespace) as statuses:
            start_rollout(cluster, namespace, steps)
            status = wait_step(cluster, namespace, interrupted)
            if "analysis" in steps[interrupted]:
                # Killed with some measurements taken: they must count, none taken twice.
                wait_until(
                    "a first measurement",
                    lambda: _taken(get_md(cluster, namespace, "ha")["status"]) >= 1,
                    30,
                    every=0.2,
                )
            else:
                time.sleep(4)
            kill(op)
            killed = time.monotonic()
            time.sleep(3)  # dead for a while: the step's clock keeps running without it
            op = start_replica(tmp_path, namespace, "rollwise-operator-ha-single")
            md = wait_promoted(cluster, namespace, op)
            print(
                f"\nrestarted operator finished the rollout {time.monotonic() - killed:.1f}s after the kill"
            )
        assert_resumed_in_place(
            cluster, namespace, statuses, interrupted, status["stepStartedAt"], len(steps)
        )
        assert md["status"]["history"][0]["outcome"] == "Promoted"
        if "analysis" in steps[interrupted]:
            last = [s for s in statuses.seen if (s.get("analysis") or {}).get("step") == interrupted][-1]
            (metric,) = last["analysis"]["metrics"]
            assert metric["successful"] == 3 and metric["failed"] == 0, metric
    finally:
        op.stop()


def _taken(status: dict[str, Any]) -> int:
    analysis = status.get("analysis") or {}
    return sum(
        m.get("successful", 0) + m.get("failed", 0) + m.get("inconclusive", 0)
        for m in analysis.get("metrics", [])
    )


def test_the_follower_resumes_the_killed_leaders_rollout_at_the_same_step(
    cluster: Cluster, ha_namespace: str, tmp_path: Path
) -> None:
    namespace = ha_namespace
    client.CustomObjectsApi(cluster.api).create_namespaced_custom_object(
        "kopf.dev",
        "v1",
        namespace,
        "kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": PEERING}},
    )
    leader_user, follower_user = "rollwise-operator-ha-leader", "rollwise-operator-ha-follower"
    leader = start_replica(tmp_path, namespace, leader_user, peering=PEERING, priority=200)
    follower = start_replica(tmp_path, namespace, follower_user, peering=PEERING, priority=100)
    try:
        # Kopf starts every peer paused until it has seen the peering object: the leader then
        # resumes, the follower (lower priority) stays paused and logs nothing.
        wait_until("both replicas in the peering object", lambda: len(peers(cluster, namespace)) == 2, 60)
        wait_until("the leader to act", lambda: "Resuming operations" in leader.log.read_text(), 30)
        assert "Resuming operations" not in follower.log.read_text(), follower.log_tail()
        offset = audit_offset()
        assert apply(namespace, model_deployment("1.0.0", PAUSE_STEPS)).returncode == 0
        wait_healthy(cluster, namespace, "ha")
        with Statuses(cluster, namespace) as statuses:
            start_rollout(cluster, namespace, PAUSE_STEPS)
            status = wait_step(cluster, namespace, 1)
            time.sleep(3)
            assert audit_writes(leader_user, offset, namespace), "the leader did nothing"
            early = [
                w
                for w in audit_writes(follower_user, offset, namespace)
                if w["objectRef"]["resource"] != "kopfpeerings"
            ]
            assert early == [], [(w["verb"], w["objectRef"]) for w in early]
            kill_offset = audit_offset()
            kill(leader)
            killed = time.monotonic()
            md = wait_promoted(cluster, namespace, follower)
            print(f"\nfollower finished the rollout {time.monotonic() - killed:.1f}s after the leader's kill")
        assert_resumed_in_place(cluster, namespace, statuses, 1, status["stepStartedAt"], len(PAUSE_STEPS))
        assert md["status"]["history"][0]["outcome"] == "Promoted"
        took_over = [
            w
            for w in audit_writes(follower_user, kill_offset, namespace)
            if w["objectRef"]["resource"] != "kopfpeerings"
        ]
        assert took_over, "the follower never wrote: someone else finished the rollout"
        late = [
            w
            for w in audit_writes(leader_user, kill_offset, namespace)
            if w["objectRef"]["resource"] != "kopfpeerings"
        ]
        assert late == [], "the killed leader still wrote"
    finally:
        leader.stop()
        follower.stop()


def test_many_rollouts_at_once_enter_each_step_once(
    cluster: Cluster, ha_namespace: str, tmp_path: Path
) -> None:
    """Twenty canaries started together, so that children's events keep waking each daemon right
    after its own status writes: a pass planned from a body that lags our last write would enter
    that write's step again with a later start time (the scale benchmark caught one in five)."""
    namespace, names = ha_namespace, [f"m{i:02d}" for i in range(20)]
    steps = [
        {"setWeight": 25},
        {"pause": {"durationSeconds": 3}},
        {"setWeight": 50},
        {"pause": {"durationSeconds": 3}},
    ]
    op = start_replica(tmp_path, namespace, "rollwise-operator-many")
    try:
        for name in names:
            assert apply(namespace, model_deployment("1.0.0", steps, name)).returncode == 0
        for name in names:
            wait_healthy(cluster, namespace, name)
        with Statuses(cluster, namespace) as statuses:
            items = [model_deployment("2.0.0", steps, n) for n in names]
            body = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
            result = local_cluster.kubectl(
                "-n", namespace, "apply", "--server-side", "-f", "-", stdin=body, check=False
            )
            assert result.returncode == 0, result.stderr

            def promoted() -> bool:
                items = client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL
                )["items"]
                done = [m for m in items if (m.get("status") or {}).get("stableVersion") == "2.0.0"]
                return len(done) == len(names)

            wait_until(f"{len(names)} rollouts promoted", promoted, 180)
        twice = {n: entered_steps(cluster, namespace, n) for n in names}
        twice = {n: e for n, e in twice.items() if e != [1, 2, 3, 4]}
        assert not twice, f"steps entered out of order or twice: {twice}"
        starts = {n: statuses.starts(n) for n in names}
        restarted = {n: dict(s) for n, s in starts.items() if any(len(t) > 1 for t in s.values())}
        assert not restarted, f"a step's start time changed while it ran: {restarted}"
    finally:
        op.stop()
