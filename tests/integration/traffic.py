"""Live traffic for rollout scenarios: a steady load generator and a bulk sender, each recording
which model version answered, plus the waits every rollout test shares."""

from __future__ import annotations

import copy
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import yaml

from e2e import modelstore, paths
from e2e.demo import ROLLOUT
from e2e.traffic import Load, send_many

__all__ = ["ANALYSIS", "Load", "send_many"]
from tests.conftest import Cluster
from tests.integration.test_operator import get_md

# The demo's analysis (5 s intervals, success rate >= 99 %, p99 <= 0.25 s, at least 5 requests per
# interval, two thin intervals tolerated): what the demo shows is what these tests prove.
ANALYSIS: dict[str, Any] = copy.deepcopy(ROLLOUT["analysis"])


def base_md() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((paths.REPO / "examples" / "iris-sklearn.yaml").read_text())
    return copy.deepcopy(doc)


def with_reference(version: str, artifact: str, claim: str, rollout: dict[str, Any]) -> dict[str, Any]:
    """One replica of a scikit-learn Iris model with its feature schema and the reference
    distribution read from the claim `claim` (the example models' `iris-reference.json`)."""
    md = base_md()
    md["spec"]["model"] = model(version, artifact, "sklearn")
    md["spec"]["model"]["featureSchema"] = json.loads(
        (modelstore.make_models() / "iris-schema.json").read_text()
    )
    md["spec"]["model"]["reference"] = {"uri": f"pvc://{claim}/iris-reference.json"}
    md["spec"]["runtime"] = {"replicas": 1}
    md["spec"]["rollout"] = rollout
    return md


def model(version: str, artifact: str, fmt: str) -> dict[str, Any]:
    return {
        "name": "iris",
        "version": version,
        "uri": modelstore.uri_of(artifact),
        "sha256": modelstore.sha256_of(artifact),
        "format": fmt,
    }


def service_url(cluster: Cluster, namespace: str, service: str) -> str:
    svc = cluster.core.read_namespaced_service(service, namespace)
    return f"http://{svc.spec.cluster_ip}:{svc.spec.ports[0].port}/v2/models/iris/infer"


def candidate_pods_ready(cluster: Cluster, namespace: str, at_least: int = 1) -> bool:
    pods = cluster.core.list_namespaced_pod(namespace, label_selector="rollwise.dev/track=candidate").items
    ready = [
        p for p in pods if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]
    return len(ready) >= at_least


def rolled_back(cluster: Cluster, namespace: str, name: str = "iris") -> bool:
    md = get_md(cluster, namespace, name)
    dep = cluster.apps.read_namespaced_deployment(f"{name}-candidate", namespace)
    return bool(md["status"].get("phase") == "RolledBack" and (dep.spec.replicas or 0) == 0)


def promoted(cluster: Cluster, namespace: str, version: str, name: str = "iris") -> bool:
    status = get_md(cluster, namespace, name).get("status", {})
    return bool(status.get("stableVersion") == version and status.get("phase") == "Healthy")


def with_status(cluster: Cluster, namespace: str, wait: Callable[[], object], name: str = "iris") -> None:
    """Run a wait; on timeout, fail with the ModelDeployment's status and Events (what a human reads)."""
    try:
        wait()
    except AssertionError as err:
        md = get_md(cluster, namespace, name)
        events = cluster.core.list_namespaced_event(namespace).items
        notes = [f"{e.reason}: {e.message}" for e in events if e.reason]
        status = json.dumps(md.get("status"), indent=1)[:4000]
        raise AssertionError(f"{err}\nstatus: {status}\nevents: {notes[-15:]}") from None


def prom_value(cluster: Cluster, query: str) -> float | None:
    qs = urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(f"{cluster.prometheus_url}/api/v1/query?{qs}", timeout=5) as resp:
        result = json.load(resp)["data"]["result"]
    return float(result[0]["value"][1]) if result else None
