"""Rollout control on the real API server (issue 5), serving pods on kwok nodes: a newer change
supersedes the candidate cleanly, and per-track HPAs follow the step instead of fighting it."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes import client

from tests.conftest import Cluster, wait_until
from tests.integration.conftest import Operator, kubectl, on_kwok
from tests.integration.test_operator import EXAMPLE, apply, get_md, wait_healthy

pytestmark = [pytest.mark.cluster, pytest.mark.kwok]

STEPS = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 75}, {"pause": {}}]


def manifest(version: str, runtime: dict[str, Any] | None = None) -> dict[str, Any]:
    md = copy.deepcopy(EXAMPLE)
    md["metadata"] = {"name": "iris"}
    md["spec"]["model"]["version"] = version
    md["spec"]["runtime"] = on_kwok(runtime or {"replicas": 4})
    md["spec"]["rollout"] = {"canary": {"steps": STEPS}, "traffic": {"provider": "replicas"}}
    return md


def paused_at(cluster: Cluster, namespace: str, version: str, step: int) -> dict[str, Any] | None:
    status: dict[str, Any] = get_md(cluster, namespace, "iris").get("status", {})
    ok = (status.get("candidateVersion"), status.get("phase"), status.get("currentStep")) == (
        version,
        "Paused",
        step,
    )
    return status if ok else None


def test_a_newer_change_supersedes_the_candidate_and_starts_over(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    assert apply(namespace, manifest("1.0.0")).returncode == 0
    wait_healthy(cluster, namespace, "iris")
    assert apply(namespace, manifest("2.0.0")).returncode == 0
    wait_until("2.0.0 paused at 25 %", lambda: paused_at(cluster, namespace, "2.0.0", 1), 60)
    assert apply(namespace, manifest("3.0.0")).returncode == 0
    status = wait_until("3.0.0 paused at 25 %", lambda: paused_at(cluster, namespace, "3.0.0", 1), 60)
    assert status["stableVersion"] == "1.0.0" and status["weight"] == 25
    superseded = status["history"][0]
    assert (superseded["version"], superseded["outcome"]) == ("2.0.0", "Superseded"), status["history"]
    dep = cluster.apps.read_namespaced_deployment("iris-candidate", namespace)
    assert dep.metadata.annotations["rollwise.dev/revision"] == status["candidateRevision"]
    pods = cluster.core.list_namespaced_pod(namespace, label_selector="rollwise.dev/track=candidate").items
    wait_until(
        "no 2.0.0 candidate pod left",
        lambda: all(
            p.metadata.deletion_timestamp or "3.0.0" in str(p.spec.containers[0].args)
            for p in cluster.core.list_namespaced_pod(
                namespace, label_selector="rollwise.dev/track=candidate"
            ).items
        ),
        60,
    )
    assert pods, "the candidate should have pods"


def test_per_track_hpas_follow_the_step(cluster: Cluster, operator: Operator, namespace: str) -> None:
    """Bounds are the step's share of minReplicas..maxReplicas (2..8) per track, so neither HPA
    can push its track past the weight: at 25 % stable 1..6 and candidate 1..2, at 75 % the reverse."""
    auto = {
        "autoscaling": {"minReplicas": 2, "maxReplicas": 8, "cpuUtilization": 70},
        "resources": {"requests": {"cpu": "100m"}},
    }
    assert apply(namespace, manifest("1.0.0", auto)).returncode == 0
    wait_healthy(cluster, namespace, "iris")
    assert bounds(cluster, namespace) == {"iris-stable": (2, 8)}
    assert apply(namespace, manifest("2.0.0", auto)).returncode == 0
    wait_until("paused at 25 %", lambda: paused_at(cluster, namespace, "2.0.0", 1), 60)
    assert bounds(cluster, namespace) == {"iris-stable": (1, 6), "iris-candidate": (1, 2)}
    kubectl("-n", namespace, "annotate", "md", "iris", "--overwrite", "rollwise.dev/action=resume:1")
    wait_until("paused at 75 %", lambda: paused_at(cluster, namespace, "2.0.0", 3), 60)
    assert bounds(cluster, namespace) == {"iris-stable": (1, 2), "iris-candidate": (1, 6)}
    kubectl("-n", namespace, "annotate", "md", "iris", "--overwrite", "rollwise.dev/action=promote-full:2")
    wait_until(
        "promoted", lambda: get_md(cluster, namespace, "iris")["status"].get("stableVersion") == "2.0.0", 60
    )
    wait_until("one HPA at full bounds", lambda: bounds(cluster, namespace) == {"iris-stable": (2, 8)}, 60)


def bounds(cluster: Cluster, namespace: str) -> dict[str, tuple[int, int]]:
    hpas = client.AutoscalingV2Api(cluster.api).list_namespaced_horizontal_pod_autoscaler(namespace).items
    return {h.metadata.name: (h.spec.min_replicas, h.spec.max_replicas) for h in hpas}
