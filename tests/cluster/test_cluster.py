"""Each part of the local cluster, proven on the real thing (issue: a real local Kubernetes)."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client, dynamic
from kubernetes.client.rest import ApiException

from e2e import cluster as local_cluster
from e2e import components as cfg
from e2e import images, paths
from tests.conftest import Cluster, wait_until

pytestmark = pytest.mark.cluster

HTTP_IMAGE = "rollwise/e2e-http:2"

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.e2e.rollwise.dev"},
    "spec": {
        "group": "e2e.rollwise.dev",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}},
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.min <= self.max",
                                        "message": "spec.min must not exceed spec.max",
                                    }
                                ],
                            }
                        },
                    }
                },
            }
        ],
    },
}


def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(paths.KUBECTL), f"--kubeconfig={paths.KUBECONFIG}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )


def test_up_is_idempotent_and_fast_when_already_up(cluster: Cluster) -> None:
    before = local_cluster.read_pid("kube-apiserver")
    assert local_cluster.up(kwok_nodes=3) == cluster.kubeconfig
    assert local_cluster.read_pid("kube-apiserver") == before


def test_env_prints_kubeconfig_and_prometheus(cluster: Cluster) -> None:
    lines = local_cluster.env_lines()
    assert f"export KUBECONFIG={cluster.kubeconfig}" in lines
    assert f"export ROLLWISE_PROMETHEUS_URL={cluster.prometheus_url}" in lines


def test_server_reports_the_pinned_release(cluster: Cluster) -> None:
    info = client.VersionApi(cluster.api).get_code()
    assert info.git_version == paths.KUBE_VERSION


def test_crd_cel_rule_rejects_a_bad_object_with_its_message(cluster: Cluster, namespace: str) -> None:
    ext = client.ApiextensionsV1Api(cluster.api)
    try:
        ext.create_custom_resource_definition(WIDGET_CRD)
    except ApiException as err:
        if err.status != 409:
            raise
    wait_until(
        "the Widget CRD to be established",
        lambda: any(
            c.type == "Established" and c.status == "True"
            for c in (ext.read_custom_resource_definition("widgets.e2e.rollwise.dev").status.conditions or [])
        ),
        30,
    )
    custom = client.CustomObjectsApi(cluster.api)
    bad = {
        "apiVersion": "e2e.rollwise.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "bad"},
        "spec": {"min": 5, "max": 1},
    }
    with pytest.raises(ApiException) as caught:
        wait_until(
            "the CRD to be served",
            lambda: custom.list_namespaced_custom_object("e2e.rollwise.dev", "v1", namespace, "widgets"),
            30,
        )
        custom.create_namespaced_custom_object("e2e.rollwise.dev", "v1", namespace, "widgets", bad)
    assert caught.value.status == 422
    assert "spec.min must not exceed spec.max" in caught.value.body
    good = {**bad, "metadata": {"name": "good"}, "spec": {"min": 1, "max": 5}}
    custom.create_namespaced_custom_object("e2e.rollwise.dev", "v1", namespace, "widgets", good)


def test_server_side_apply_twice_is_a_no_op(cluster: Cluster, namespace: str) -> None:
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ssa", "namespace": namespace},
        "data": {"a": "1"},
    }
    dyn = dynamic.DynamicClient(cluster.api)
    res = dyn.resources.get(api_version="v1", kind="ConfigMap")
    first = res.server_side_apply(body=cm, name="ssa", namespace=namespace, field_manager="rollwise-test")
    second = res.server_side_apply(body=cm, name="ssa", namespace=namespace, field_manager="rollwise-test")
    assert first.metadata.resourceVersion == second.metadata.resourceVersion


def _deployment(name: str, image: str, replicas: int, *, on_kwok: bool) -> client.V1Deployment:
    labels = {"app": name}
    pod_spec = client.V1PodSpec(
        containers=[
            client.V1Container(
                name="main",
                image=image,
                image_pull_policy="Never",
                ports=[client.V1ContainerPort(container_port=8080)],
            )
        ],
        automount_service_account_token=True,
    )
    if on_kwok:
        pod_spec.node_selector = {cfg.NODE_KIND_LABEL: "simulated"}
        pod_spec.tolerations = [
            client.V1Toleration(key=cfg.SIMULATED_TAINT_KEY, operator="Exists", effect="NoSchedule")
        ]
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(
                    labels=labels, annotations={cfg.SCRAPE_ANNOTATION: "true", "prometheus.io/port": "8080"}
                ),
                spec=pod_spec,
            ),
        ),
    )


def test_deployment_on_kwok_nodes_becomes_available(cluster: Cluster, namespace: str) -> None:
    cluster.apps.create_namespaced_deployment(
        namespace, _deployment("sim", "rollwise/none:0", 3, on_kwok=True)
    )
    dep = wait_until(
        "3/3 available on kwok nodes",
        lambda: (
            (d := cluster.apps.read_namespaced_deployment("sim", namespace)).status.available_replicas == 3
            and d
        ),
        60,
    )
    assert dep.status.ready_replicas == 3
    pods = cluster.core.list_namespaced_pod(namespace, label_selector="app=sim").items
    simulated = {
        n.metadata.name
        for n in cluster.core.list_node(label_selector="rollwise.dev/node-kind=simulated").items
    }  # kwok-node-0..N-1: `up --kwok-nodes N` (the scale bench adds some to a running cluster)
    assert simulated and {p.spec.node_name for p in pods} <= simulated


def _build_http_image() -> None:
    images.ensure_python_base()
    images.docker_build(paths.REPO / "e2e" / "testimages" / "http", HTTP_IMAGE)
    images.import_into_node(HTTP_IMAGE)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


@pytest.mark.realnode
def test_real_pod_serves_through_its_cluster_ip_and_reaches_the_api(cluster: Cluster, namespace: str) -> None:
    _build_http_image()
    cluster.apps.create_namespaced_deployment(namespace, _deployment("web", HTTP_IMAGE, 1, on_kwok=False))
    cluster.core.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1ServiceSpec(
                selector={"app": "web"}, ports=[client.V1ServicePort(port=80, target_port=8080)]
            ),
        ),
    )
    wait_until(
        "the web pod to be ready on the real node",
        lambda: cluster.apps.read_namespaced_deployment("web", namespace).status.ready_replicas == 1,
        120,
    )
    pod = cluster.core.list_namespaced_pod(namespace, label_selector="app=web").items[0]
    assert pod.spec.node_name == cfg.NODE_NAME
    assert pod.status.pod_ip.startswith("10.244.0.")
    ip = cluster.core.read_namespaced_service("web", namespace).spec.cluster_ip
    body = wait_until("an answer through the ClusterIP", lambda: _get(f"http://{ip}/"), 30)
    assert body.startswith("hello from web-")
    who = json.loads(wait_until("the pod's call to the API server", lambda: _get(f"http://{ip}/whoami"), 30))
    assert who["service"] == f"{cfg.SERVICE_IP}:443"
    assert who["user"] == f"system:serviceaccount:{namespace}:default"

    # Cluster DNS (CoreDNS on the host) resolves Services for pods.
    resolved = _get(f"http://{ip}/resolve/web.{namespace}.svc.cluster.local")
    assert resolved == ip
    assert _get(f"http://{ip}/resolve/kubernetes.default.svc.cluster.local") == cfg.SERVICE_IP
    # In-cluster clients reach the harness's Prometheus by name.
    prom = urllib.parse.quote("http://prometheus.monitoring:9090/-/ready", safe="")
    assert _get(f"http://{ip}/fetch?url={prom}") == "200"

    # Prometheus discovers the annotated pod and scrapes it.
    query = urllib.parse.urlencode({"query": f'up{{namespace="{namespace}",pod="{pod.metadata.name}"}}'})

    def target_up() -> bool:
        data = json.loads(_get(f"{cluster.prometheus_url}/api/v1/query?{query}"))
        result = data["data"]["result"]
        return bool(result) and result[0]["value"][1] == "1"

    wait_until("Prometheus to report the pod up == 1", target_up, 60)


@pytest.mark.cluster_teardown
def test_down_leaves_no_process_mount_interface_or_rule(cluster: Cluster) -> None:
    pids = {c.name: local_cluster.read_pid(c.name) for c in local_cluster.COMPONENTS}
    local_cluster.down()
    assert local_cluster.leftovers() == {
        "processes": [],
        "mounts": [],
        "interfaces": [],
        "iptables": [],
        "cgroups": [],
    }
    for name, pid in pids.items():
        assert not local_cluster.alive(pid), f"{name} (pid {pid}) still runs"
    assert not Path(f"/sys/class/net/{cfg.BRIDGE}").exists()
