"""The operator's steady state on the real local cluster (issue 3): children, rejection texts,
zero idle writes, restart safety, deletion, autoscaling."""

from __future__ import annotations

import copy
import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from e2e import paths
from tests.conftest import Cluster, wait_until
from tests.integration.conftest import (
    OPERATOR_USER,
    SERVING_IMAGE,
    Operator,
    audit_offset,
    audit_writes,
    kubectl,
    on_kwok,
    start_operator,
)

pytestmark = [pytest.mark.cluster, pytest.mark.kwok]

GROUP, VERSION, PLURAL = "rollwise.dev", "v1alpha1", "modeldeployments"
EXAMPLE = yaml.safe_load((paths.REPO / "examples" / "iris-sklearn.yaml").read_text())


def manifest(name: str, *, runtime: dict[str, Any] | None = None) -> dict[str, Any]:
    md = copy.deepcopy(EXAMPLE)
    md["metadata"] = {"name": name}
    md["spec"]["runtime"] = on_kwok(runtime or {"replicas": 2})
    return md


def apply(namespace: str, body: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kubectl("-n", namespace, "apply", "--server-side", "-f", "-", stdin=json.dumps(body), check=False)


def get_md(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return obj


def condition(md: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in md.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def wait_healthy(cluster: Cluster, namespace: str, name: str, timeout: float = 60) -> dict[str, Any]:
    def healthy() -> dict[str, Any] | None:
        md = get_md(cluster, namespace, name)
        ok = (
            md.get("status", {}).get("phase") == "Healthy"
            and condition(md, "Ready").get("status") == "True"
            and md["status"].get("observedGeneration") == md["metadata"]["generation"]
        )
        return md if ok else None

    return wait_until(f"{namespace}/{name} Healthy and Ready", healthy, timeout)


def test_a_model_deployment_becomes_its_children(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    assert apply(namespace, manifest("iris")).returncode == 0
    md = wait_healthy(cluster, namespace, "iris")
    uid = md["metadata"]["uid"]

    dep = cluster.apps.read_namespaced_deployment("iris-stable", namespace)
    assert [(o.kind, o.name, o.uid, o.controller) for o in dep.metadata.owner_references] == [
        ("ModelDeployment", "iris", uid, True)
    ]
    assert dep.metadata.labels["rollwise.dev/track"] == "stable"
    assert dep.metadata.labels["app.kubernetes.io/managed-by"] == "rollwise"
    assert dep.spec.replicas == 2
    assert dep.status.available_replicas == 2
    pod = dep.spec.template
    assert pod.metadata.annotations["prometheus.io/scrape"] == "true"
    (container,) = pod.spec.containers
    assert container.image == SERVING_IMAGE
    args = container.args or []
    for flag, value in [
        ("--model-uri", EXAMPLE["spec"]["model"]["uri"]),
        ("--sha256", EXAMPLE["spec"]["model"]["sha256"]),
        ("--format", "sklearn"),
        ("--version", "1.0.0"),
        ("--track", "stable"),
    ]:
        assert args[args.index(flag) + 1] == value, flag
    assert container.readiness_probe.http_get.path == "/v2/health/ready"
    assert container.liveness_probe.http_get.path == "/v2/health/live"
    sc = container.security_context
    assert sc.read_only_root_filesystem and sc.allow_privilege_escalation is False
    assert sc.capabilities.drop == ["ALL"]
    assert pod.spec.security_context.run_as_non_root
    assert pod.spec.security_context.seccomp_profile.type == "RuntimeDefault"

    services = {s.metadata.name for s in cluster.core.list_namespaced_service(namespace).items}
    assert services == {"iris"}  # the track Services exist only while a candidate does
    svc = cluster.core.read_namespaced_service("iris", namespace)
    assert svc.metadata.owner_references[0].uid == uid

    assert md["status"]["stableVersion"] == "1.0.0"
    events = cluster.core.list_namespaced_event(namespace, field_selector="involvedObject.name=iris").items
    assert any(e.reason == "Available" for e in events), [e.reason for e in events]


BAD = [
    pytest.param(
        {"rollout": {"canary": {"steps": [{"setWeight": 50}, {"setWeight": 20}]}}},
        "setWeight values must strictly increase",
        id="weights going down are rejected naming the steps",
    ),
    pytest.param(
        {"rollout": {"canary": {"steps": [{"setWeight": 120}]}}},
        "setWeight",
        id="a weight over 100 is rejected naming setWeight",
    ),
    pytest.param(
        {"model": {**EXAMPLE["spec"]["model"], "sha256": None}},
        "sha256",
        id="a pickle format without a digest is rejected naming sha256",
    ),
    pytest.param(
        {"rollout": {"canary": {"steps": [{"setWeight": 10}]}, "shadow": {}}},
        "set exactly one strategy block",
        id="two strategy blocks are rejected",
    ),
    pytest.param(
        {"runtime": {"replicas": 2, "autoscaling": {"maxReplicas": 3, "cpuUtilization": 50}}},
        "set replicas or autoscaling, not both",
        id="replicas and autoscaling together are rejected",
    ),
]


@pytest.mark.parametrize(("spec_patch", "message"), BAD)
def test_bad_manifests_are_rejected_with_the_field_and_the_fix(
    cluster: Cluster, crds: None, namespace: str, spec_patch: dict[str, Any], message: str
) -> None:
    body = copy.deepcopy(EXAMPLE)
    body["metadata"] = {"name": "bad"}
    body["spec"].update(spec_patch)
    body["spec"]["model"] = {k: v for k, v in body["spec"]["model"].items() if v is not None}
    result = apply(namespace, body)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "spec." in result.stderr, result.stderr


def test_an_idle_operator_writes_nothing(cluster: Cluster, operator: Operator, namespace: str) -> None:
    assert apply(namespace, manifest("quiet")).returncode == 0
    wait_healthy(cluster, namespace, "quiet")
    time.sleep(3)  # let the last status write's echo pass through the watch
    offset = audit_offset()
    time.sleep(12)  # resync is 5 s here: at least two full reconcile passes
    writes = audit_writes(OPERATOR_USER, offset, namespace)
    assert writes == [], [(w["verb"], w["objectRef"]) for w in writes]
    assert operator.alive(), operator.log_tail()


def test_a_restarted_operator_changes_nothing(
    cluster: Cluster, operator: Operator, namespace: str, tmp_path: Path
) -> None:
    assert apply(namespace, manifest("steady")).returncode == 0
    wait_healthy(cluster, namespace, "steady")
    time.sleep(3)
    before = _versions(cluster, namespace)
    with operator.paused(tmp_path):
        offset = audit_offset()
        fresh = start_operator(tmp_path, operator.kubeconfig)
        try:
            time.sleep(12)
            writes = audit_writes(OPERATOR_USER, offset, namespace)
            assert writes == [], [(w["verb"], w["objectRef"]) for w in writes]
            assert _versions(cluster, namespace) == before
        finally:
            fresh.stop()


def _versions(cluster: Cluster, namespace: str) -> dict[str, str]:
    out = {"md": get_md(cluster, namespace, "steady")["metadata"]["resourceVersion"]}
    for d in cluster.apps.list_namespaced_deployment(namespace).items:
        out[f"deploy/{d.metadata.name}"] = d.metadata.resource_version
    for s in cluster.core.list_namespaced_service(namespace).items:
        out[f"svc/{s.metadata.name}"] = s.metadata.resource_version
    return out


def test_scaling_changes_replicas_without_a_new_revision(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    assert apply(namespace, manifest("scaled")).returncode == 0
    wait_healthy(cluster, namespace, "scaled")
    before = cluster.apps.read_namespaced_deployment("scaled-stable", namespace)
    assert apply(namespace, manifest("scaled", runtime={"replicas": 3})).returncode == 0
    after = wait_until(
        "3 replicas",
        lambda: (
            (d := cluster.apps.read_namespaced_deployment("scaled-stable", namespace)).spec.replicas == 3
            and d
        ),
        30,
    )
    assert (
        after.metadata.annotations["rollwise.dev/revision"]
        == before.metadata.annotations["rollwise.dev/revision"]
    )
    assert after.metadata.generation == before.metadata.generation + 1  # only the scale changed
    wait_healthy(cluster, namespace, "scaled")


def test_autoscaling_gets_an_hpa_and_the_operator_leaves_replicas_alone(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    runtime = {
        "autoscaling": {"minReplicas": 2, "maxReplicas": 4, "cpuUtilization": 60},
        "resources": {"requests": {"cpu": "100m"}},
    }
    assert apply(namespace, manifest("auto", runtime=runtime)).returncode == 0
    hpa = wait_until(
        "the stable HPA",
        lambda: client.AutoscalingV2Api(cluster.api).read_namespaced_horizontal_pod_autoscaler(
            "auto-stable", namespace
        ),
        30,
    )
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 4)
    assert hpa.spec.scale_target_ref.name == "auto-stable"
    dep = cluster.apps.read_namespaced_deployment("auto-stable", namespace)
    ours = [m for m in dep.metadata.managed_fields if m.manager == "rollwise"]
    assert ours and all("f:replicas" not in json.dumps(m.fields_v1) for m in ours)


def test_deleting_a_model_deployment_removes_its_children(
    cluster: Cluster, operator: Operator, namespace: str
) -> None:
    assert apply(namespace, manifest("gone")).returncode == 0
    wait_healthy(cluster, namespace, "gone")
    kubectl("-n", namespace, "delete", "modeldeployment", "gone", "--wait=true", "--timeout=60s")
    wait_until(
        "the children to be garbage-collected",
        lambda: (
            not cluster.apps.list_namespaced_deployment(namespace).items
            and not [
                s
                for s in cluster.core.list_namespaced_service(namespace).items
                if s.metadata.name.startswith("gone")
            ]
        ),
        60,
    )


def test_the_operator_exports_its_own_metrics(cluster: Cluster, operator: Operator, namespace: str) -> None:
    assert apply(namespace, manifest("counted")).returncode == 0
    wait_healthy(cluster, namespace, "counted")

    def scrape() -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        samples = {}
        for line in text.splitlines():
            if line.startswith("rollwise_operator_"):
                key, _, value = line.rpartition(" ")
                samples[key] = float(value)
        return samples

    samples = wait_until(
        "Healthy counted by phase",
        lambda: (s := scrape()).get('rollwise_operator_model_deployments{phase="Healthy"}', 0) >= 1 and s,
        30,
    )
    assert samples['rollwise_operator_reconciles_total{result="ok"}'] >= 1
    assert samples["rollwise_operator_reconcile_duration_seconds_count"] >= 1
    assert samples['rollwise_operator_api_writes_total{kind="Deployment",verb="apply"}'] >= 1
