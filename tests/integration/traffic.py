"""Live traffic for rollout scenarios: a steady load generator and a bulk sender, each recording
which model version answered, plus the waits every rollout test shares."""

from __future__ import annotations

import copy
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import yaml

from e2e import modelstore, paths
from e2e.demo import ROLLOUT
from tests.conftest import Cluster, wait_until
from tests.integration.test_operator import get_md

# The demo's analysis (5 s intervals, success rate >= 99 %, p99 <= 0.25 s, at least 5 requests per
# interval, two thin intervals tolerated): what the demo shows is what these tests prove.
ANALYSIS: dict[str, Any] = copy.deepcopy(ROLLOUT["analysis"])

# One row of each Iris class, cycled, so class shares mean something for drift checks.
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.0, 2.9, 4.5, 1.5], [6.7, 3.0, 5.2, 2.3]]
BODIES = [
    json.dumps({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": r}]}).encode()
    for r in ROWS
]


def base_md() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((paths.REPO / "examples" / "iris-sklearn.yaml").read_text())
    return copy.deepcopy(doc)


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


def send(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """One inference request: (HTTP status or 0 when unreachable, the answering model version)."""
    req = urllib.request.Request(url, body, {"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, str(json.load(resp).get("model_version", ""))
    except urllib.error.HTTPError as err:
        return err.code, ""
    except (urllib.error.URLError, OSError):
        return 0, ""


@dataclass
class Load:
    """Requests at a steady rate to one Service, each outcome recorded as (time, status, version)."""

    url: str
    rate_per_second: float = 25.0
    limit_seconds: float = 300.0
    headers: Callable[[int], dict[str, str]] | None = None
    results: list[tuple[float, int, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        deadline = time.monotonic() + self.limit_seconds
        sent = 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            headers = self.headers(sent) if self.headers else None
            code, version = send(self.url, BODIES[sent % len(BODIES)], headers)
            sent += 1
            self.results.append((started, code, version))
            time.sleep(max(0.0, 1 / self.rate_per_second - (time.monotonic() - started)))

    def failures_since(self, since: float) -> list[tuple[float, int, str]]:
        return [r for r in self.results if r[0] >= since and r[1] != 200]

    def versions_since(self, since: float) -> set[str]:
        return {v for t, code, v in self.results if t >= since and code == 200}

    def steady(self, count: int = 20) -> None:
        wait_until("steady traffic", lambda: len(self.results) >= count, 30)


@contextmanager
def running(load: Load) -> Iterator[Load]:
    thread = threading.Thread(target=load.run, daemon=True)
    thread.start()
    try:
        yield load
    finally:
        load.stop.set()
        thread.join(10)


def send_many(
    url: str, headers: list[dict[str, str]], workers: int = 16
) -> list[tuple[int, str]]:  # fmt: skip
    """One request per headers entry, `workers` at a time, answers in the same order."""
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda i: send(url, BODIES[i % len(BODIES)], headers[i]), range(len(headers))))


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
