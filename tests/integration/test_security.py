"""Safe on a shared cluster (issue 16), each attack on the real cluster: a ModelDeployment never
takes over an object it did not create."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from tests.conftest import Cluster, wait_until
from tests.integration.conftest import Operator, kubectl
from tests.integration.test_operator import apply, get_md, manifest

pytestmark = [pytest.mark.cluster, pytest.mark.kwok]


def test_a_model_deployment_named_like_an_existing_service_does_not_take_it_over(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    """Before: a ModelDeployment `checkout` force-applied its Service over the shop's Service
    `checkout` (selector replaced, Rollwise added as owner, so deleting the ModelDeployment would
    have garbage-collected the shop's Service). Now the spec is Invalid naming the Service and the
    fix, and nothing is written: the victim is unchanged and no child is created."""
    victim = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "checkout", "namespace": namespace, "labels": {"app": "shop"}},
        "spec": {"selector": {"app": "shop"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(victim))
    before = cluster.core.read_namespaced_service("checkout", namespace)
    assert apply(namespace, manifest("checkout")).returncode == 0

    def refused() -> bool:
        status = get_md(cluster, namespace, "checkout").get("status", {})
        return status.get("phase") == "Invalid"

    wait_until("the ModelDeployment refused as Invalid", refused, 60)
    status = get_md(cluster, namespace, "checkout")["status"]
    assert f"Service {namespace}/checkout already exists (no controller)" in status["message"], status
    assert "rename the ModelDeployment or remove that Service" in status["message"]
    after = cluster.core.read_namespaced_service("checkout", namespace)
    assert after.spec.selector == {"app": "shop"} and not after.metadata.owner_references
    assert after.metadata.resource_version == before.metadata.resource_version  # not even touched
    deployments = client.AppsV1Api(cluster.api).list_namespaced_deployment(namespace).items
    assert [d.metadata.name for d in deployments] == []
    events = cluster.core.list_namespaced_event(namespace).items
    assert any(e.reason == "InvalidSpec" and "checkout already exists" in (e.message or "") for e in events)
