"""Real serving pods on the real node (issue 3): the bundled server loads the example model over
cluster DNS from the model store, answers OIP v2 through the ModelDeployment's Service, and
Prometheus scrapes its per-track metrics. Then the same through the Helm-installed operator."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e import paths
from tests.conftest import Cluster, wait_until
from tests.integration.conftest import Operator, build, kubectl
from tests.integration.test_operator import apply, get_md, wait_healthy

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.prometheus, pytest.mark.slow]

EXAMPLE = yaml.safe_load((paths.REPO / "examples" / "iris-sklearn.yaml").read_text())
IRIS_ROWS = [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]


def infer(cluster: Cluster, namespace: str, service: str) -> dict[str, Any]:
    svc = cluster.core.read_namespaced_service(service, namespace)
    url = f"http://{svc.spec.cluster_ip}:{svc.spec.ports[0].port}/v2/models/iris/infer"
    body = json.dumps({"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": IRIS_ROWS}]})
    req = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer: dict[str, Any] = json.load(resp)
    return answer


def prom_value(cluster: Cluster, query: str) -> float | None:
    qs = urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(f"{cluster.prometheus_url}/api/v1/query?{qs}", timeout=5) as resp:
        result = json.load(resp)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def serve_and_check(cluster: Cluster, namespace: str) -> None:
    md = wait_healthy(cluster, namespace, "iris", timeout=120)
    pods = cluster.core.list_namespaced_pod(namespace, label_selector="rollwise.dev/track=stable").items
    assert pods and all(p.spec.node_name == "rollwise-node" for p in pods)
    answer = wait_until("an OIP v2 answer through the Service", lambda: infer(cluster, namespace, "iris"), 30)
    assert answer["model_version"] == md["spec"]["model"]["version"]
    labels = next(o for o in answer["outputs"] if o["name"] == "label")
    assert labels["data"] == ["setosa", "virginica"]
    query = f'sum(rollwise_requests_total{{namespace="{namespace}",track="stable",outcome="success"}})'
    wait_until(
        "Prometheus to count the request on the stable track",
        lambda: (prom_value(cluster, query) or 0) >= 1,
        30,
    )


def test_a_model_deployment_serves_real_predictions(
    cluster: Cluster, operator: Operator, serving_image: None, model_store: None, namespace: str
) -> None:
    assert apply(namespace, EXAMPLE).returncode == 0
    serve_and_check(cluster, namespace)


def test_helm_installs_the_operator_in_cluster_and_it_serves_a_model(
    cluster: Cluster,
    operator: Operator,
    serving_image: str,
    model_store: None,
    namespace: str,
    tmp_path: Path,
) -> None:
    """By digest, as a user pins a build: the chart's image.digest and servingImage.digest."""
    operator_ref = build("operator/build-image.sh")
    digests = [
        f"{key}.digest={ref.split('@')[1]}"
        for key, ref in (("image", operator_ref), ("servingImage", serving_image))
    ]
    release = f"rw-{namespace[-5:]}"
    helm = [str(paths.HELM), f"--kubeconfig={paths.KUBECONFIG}"]
    # The session's out-of-cluster operator steps aside, so what happens is the in-cluster one's doing.
    with operator.paused(tmp_path):
        install = subprocess.run(
            [*helm, "install", release, str(paths.REPO / "charts" / "rollwise"), "-n", namespace,
             "--set", f"watchNamespace={namespace}", "--set", "peering.name=" + release,
             "--set", "prometheus.url=http://prometheus.monitoring:9090", "--wait", "--timeout", "180s",
             "--set", digests[0], "--set", digests[1]],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert install.returncode == 0, install.stderr
        try:
            op_pods = cluster.core.list_namespaced_pod(
                namespace, label_selector="app.kubernetes.io/name=rollwise"
            ).items
            assert op_pods and op_pods[0].spec.node_name == "rollwise-node"
            assert op_pods[0].spec.containers[0].image == operator_ref
            assert apply(namespace, EXAMPLE).returncode == 0
            serve_and_check(cluster, namespace)
            model_pods = cluster.core.list_namespaced_pod(
                namespace, label_selector="rollwise.dev/track"
            ).items
            assert model_pods and {p.spec.containers[0].image for p in model_pods} == {serving_image}
            md = get_md(cluster, namespace, "iris")
            managers = {
                m.manager
                for m in cluster.apps.read_namespaced_deployment(
                    "iris-stable", namespace
                ).metadata.managed_fields
            }
            assert "rollwise" in managers
            events = cluster.core.list_namespaced_event(
                namespace, field_selector="involvedObject.name=iris"
            ).items
            instances = {e.reporting_instance for e in events if e.reason == "Available"}
            assert any(i.startswith(release) for i in instances if i), (instances, md.get("status"))
        except AssertionError as err:
            logs = kubectl("-n", namespace, "logs", f"deploy/{release}-rollwise", "--tail=40", check=False)
            raise AssertionError(f"{err}\nin-cluster operator log:\n{logs.stdout}{logs.stderr}") from None
        finally:
            subprocess.run([*helm, "uninstall", release, "-n", namespace], capture_output=True, check=False)
