"""The Grafana dashboard's queries on the real Prometheus (issue 6): every expression in
charts/rollwise/dashboards/rollwise.json, with its template variables filled in, run against the
local cluster's Prometheus while a canary is paused at 50 % with real serving pods on both tracks,
load flowing, and the session's operator scraped.

The operator runs out of cluster, so Prometheus cannot find it through pod discovery; the harness's
Prometheus reads host targets from file_sd files in `<cluster state>/prometheus/targets/`
(e2e/components.py), and this test registers the operator's metrics port there for its duration.
Drift needs a reference distribution, which the serving image does not carry: it is mounted from a
hostPath PersistentVolume holding the example models' `iris-reference.json`.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from e2e import paths
from tests.conftest import NAMESPACE_PREFIX, Cluster, wait_until
from tests.integration.conftest import Operator
from tests.integration.test_operator import apply, get_md
from tests.integration.traffic import (
    Load,
    candidate_pods_ready,
    service_url,
    with_reference,
    with_status,
)
from tests.unit.test_dashboard import (
    DASHBOARD,
    OPERATOR_SELECTOR,
    SERVING_SELECTOR,
    Query,
    queries,
    substitute,
    variable_queries,
)

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.prometheus, pytest.mark.slow]

RATE_WINDOW = "20s"
"""What Grafana's $__rate_interval would be here: ten of the harness's 2 s scrapes."""
HOST_TARGETS = paths.STATE / "prometheus" / "targets"
CANARY = {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}


def prometheus(cluster: Cluster, path: str, **params: str) -> dict[str, Any]:
    """One Prometheus API call; an HTTP error (a query that does not parse) fails with its body."""
    url = f"{cluster.prometheus_url}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            answer: dict[str, Any] = json.load(resp)
    except urllib.error.HTTPError as err:
        raise AssertionError(f"{path} {params}: HTTP {err.code}: {err.read().decode()[:500]}") from None
    assert answer["status"] == "success", answer
    return answer


def instant(cluster: Cluster, expr: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = prometheus(cluster, "/api/v1/query", query=expr)["data"]["result"]
    return result


def label_values(cluster: Cluster, definition: str, values: dict[str, str]) -> list[str]:
    """Grafana's `label_values(selector, label)` as Prometheus' label-values API computes it."""
    inner = substitute(definition, values).removeprefix("label_values(").removesuffix(")")
    selector, _, label = inner.rpartition(",")
    out: list[str] = prometheus(cluster, f"/api/v1/label/{label.strip()}/values", **{"match[]": selector})[
        "data"
    ]
    return out


@pytest.fixture
def operator_scraped(cluster: Cluster, operator: Operator) -> Iterator[str]:
    """The session's operator registered as a host target; yields its `instance` label."""
    instance = f"127.0.0.1:{operator.metrics_port}"
    target = HOST_TARGETS / f"{NAMESPACE_PREFIX}-operator.json"
    assert HOST_TARGETS.is_dir(), f"{HOST_TARGETS} is missing: is the local cluster's Prometheus up?"
    target.write_text(json.dumps([{"targets": [instance], "labels": {"component": "rollwise-operator"}}]))
    try:
        wait_until(
            "Prometheus to scrape the operator",
            lambda: instant(cluster, f'up{{job="host", instance="{instance}"}} == 1'),
            30,
        )
        yield instance
    finally:
        target.unlink(missing_ok=True)


def iris(version: str, artifact: str, claim: str) -> dict[str, Any]:
    return with_reference(version, artifact, claim, CANARY)


@pytest.fixture
def paused_canary(
    cluster: Cluster,
    operator: Operator,
    namespace: str,
    serving_image: None,
    model_store: None,
    reference_claim: str,
) -> Iterator[Load]:
    """v1 stable, v2 candidate paused at 50 %, both on the real node, a load running throughout."""
    assert apply(namespace, iris("1.0.0", "iris-v1.joblib", reference_claim)).returncode == 0
    with_status(
        cluster,
        namespace,
        lambda: wait_until(
            "v1 Healthy",
            lambda: get_md(cluster, namespace, "iris").get("status", {}).get("phase") == "Healthy",
            180,
        ),
    )
    with Load(service_url(cluster, namespace, "iris"), rate_per_second=20).running() as load:
        load.steady()
        assert apply(namespace, iris("2.0.0", "iris-v2.joblib", reference_claim)).returncode == 0
        wait_until("the candidate to take traffic", lambda: candidate_pods_ready(cluster, namespace), 120)
        with_status(
            cluster,
            namespace,
            lambda: wait_until(
                "the canary paused at 50%",
                lambda: get_md(cluster, namespace, "iris")["status"].get("phase") == "Paused",
                60,
            ),
        )
        yield load


def test_every_dashboard_query_runs_and_shows_the_paused_canary(
    cluster: Cluster, namespace: str, operator_scraped: str, paused_canary: Load
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    values = {"namespace": namespace, "model_deployment": "iris", "__rate_interval": RATE_WINDOW}
    all_queries = queries(dashboard)
    assert len(all_queries) >= 15

    # The template variables list this ModelDeployment.
    variables = variable_queries(dashboard)
    wait_until(
        "the namespace variable to list the test namespace",
        lambda: namespace in label_values(cluster, variables["namespace"], values),
        30,
    )
    assert label_values(cluster, variables["model_deployment"], values) == ["iris"]

    serving = [q for q in all_queries if SERVING_SELECTOR in q.expr]
    rollout = [q for q in all_queries if OPERATOR_SELECTOR in q.expr]
    operator_wide = [q for q in all_queries if q not in serving and q not in rollout]
    assert serving and rollout and operator_wide

    def results() -> dict[Query, list[dict[str, Any]]]:
        return {q: instant(cluster, substitute(q.expr, values)) for q in all_queries}

    def tracks(result: list[dict[str, Any]]) -> set[str]:
        return {r["metric"].get("track", "") for r in result}

    # Every query parses and runs at once; data follows within a few scrapes and rate windows.
    first = results()
    started = time.monotonic()

    def complete() -> dict[Query, list[dict[str, Any]]] | None:
        got = results()
        ready = all(tracks(got[q]) == {"stable", "candidate"} for q in serving) and all(
            got[q] for q in [*rollout, *operator_wide]
        )
        return got if ready else None

    try:
        got = wait_until("data for every panel", complete, 90, every=2)
    except AssertionError:
        last = results()
        empty = {q.panel: tracks(last[q]) for q in all_queries if not last[q] or q in serving}
        raise AssertionError(f"panels without the expected series (tracks seen): {empty}") from None
    assert len(first) == len(all_queries)
    elapsed = time.monotonic() - started
    print(f"\n{len(all_queries)} queries; every panel had data {elapsed:.0f}s after the pause")

    by_panel: dict[str, list[list[dict[str, Any]]]] = {}
    for q in all_queries:
        by_panel.setdefault(q.panel, []).append(got[q])
        print(f"  {q.panel} [{q.legend}]: {len(got[q])} series")

    # What the rollout panels say is what the object says.
    status = get_md(cluster, namespace, "iris")["status"]
    (phase,) = by_panel["Phase"][0]
    assert phase["metric"]["phase"] == status["phase"] == "Paused"
    (weight,) = by_panel["Candidate weight"][0]
    assert float(weight["value"][1]) == status["weight"] == 50
    stable_share, candidate_share = (float(r[0]["value"][1]) for r in by_panel["Traffic split"])
    assert (stable_share, candidate_share) == (50, 50)
    pods = {
        (r["metric"]["track"], r["metric"]["version"]): float(r["value"][1])
        for r in by_panel["Pods by track and version"][0]
    }
    assert pods == {("stable", "1.0.0"): 1, ("candidate", "2.0.0"): 1}

    # The serving panels read real answers on both tracks.
    for r in by_panel["Success rate by track"][0]:
        assert float(r["value"][1]) == pytest.approx(100), r
    features = {r["metric"]["feature"] for r in by_panel["Input drift by feature and track"][0]}
    assert features == {"sepal_length", "sepal_width", "petal_length", "petal_width"}
    # Each track answers the three Iris rows the load cycles through (`other` is the server's
    # catch-all for undeclared classes: present, at 0).
    shares = {
        (r["metric"]["track"], r["metric"]["class"]): float(r["value"][1])
        for r in by_panel["Predicted class share by track"][0]
    }
    for track in ("stable", "candidate"):
        seen = {c for (t, c), share in shares.items() if t == track and share > 0}
        assert seen and seen <= {"setosa", "versicolor", "virginica"}, shares

    # The operator panels: its passes and writes, and no errors.
    results_seen = {r["metric"]["result"] for r in by_panel["Reconciles by result"][0]}
    assert {"ok", "error"} <= results_seen
    writes = {(r["metric"]["kind"], r["metric"]["verb"]) for r in by_panel["API writes by kind and verb"][0]}
    assert ("ModelDeployment", "status") in writes
    assert paused_canary.failures_since(0) == []
