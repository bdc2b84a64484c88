"""EssenceStorage builds exactly the essence Kopf's own storage builds, from less of the body."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest
from rollwise.kube.kopf_tuning import EssenceStorage

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "iris-stable",
        "namespace": "ml",
        "uid": "u",
        "resourceVersion": "7",
        "labels": {"rollwise.dev/model-deployment": "iris", "rollwise.dev/track": "stable"},
        "annotations": {
            "rollwise.dev/applied-hash": "abc",
            "rollwise.dev/last-handled-configuration": "{}",
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
            "deployment.kubernetes.io/revision": "1",
        },
        "managedFields": [{"manager": "rollwise", "fieldsV1": {"f:spec": {"f:replicas": {}}}}],
        "ownerReferences": [{"kind": "ModelDeployment", "name": "iris", "uid": "p"}],
    },
    "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "server", "args": ["--x"]}]}}},
    "status": {"replicas": 2, "readyReplicas": 2, "conditions": [{"type": "Available", "status": "True"}]},
}
BARE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "iris"},
    "spec": {"ports": []},
}


@pytest.mark.parametrize("raw", [DEPLOYMENT, BARE], ids=["a full Deployment", "a bare Service"])
@pytest.mark.parametrize("extra", [None, ["status.readyReplicas"]], ids=["no extra fields", "a status field"])
def test_the_essence_is_kopfs(raw: dict[str, Any], extra: list[str] | None) -> None:
    ours = EssenceStorage(prefix="rollwise.dev", key="last-handled-configuration")
    theirs = kopf.AnnotationsDiffBaseStorage(prefix="rollwise.dev", key="last-handled-configuration")
    body = kopf.Body(copy.deepcopy(raw))  # type: ignore[arg-type]  # a plain dict is a raw body
    assert ours.build(body=body, extra_fields=extra) == theirs.build(body=body, extra_fields=extra)
    assert body == raw  # neither touched the body it read
