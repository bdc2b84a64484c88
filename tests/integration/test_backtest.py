"""Backtest before traffic on the real cluster (#20): examples/backtest-canary.yaml as written, its
dataset (the 150 labelled Iris rows) and models from the example model store, the backtest an
Indexed Job of the batch image's `rollwise-batch --label-column` on the real node, live traffic on
the Service throughout.

- A candidate 8 points less accurate (iris-mislabel.py: 89.3 % against 97.3 %) is rolled back by
  the backtest's accuracy check before its first step: the split stays all-stable, every live
  answer comes from the stable, and the history keeps the verdict.
- The stable's own artifact as a new version passes its backtest and walks the canary's steps to
  promotion; its finished backtest Job is deleted with the promotion.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml
from kubernetes import client

from e2e import modelstore, paths
from e2e.traffic import Load
from tests.conftest import Cluster, wait_until
from tests.integration.conftest import Operator
from tests.integration.test_operator import apply, get_md, wait_healthy
from tests.integration.traffic import service_url, with_status

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.slow]

EXAMPLE = paths.REPO / "examples" / "backtest-canary.yaml"
NAME = "iris-backtest"


def example() -> dict[str, Any]:
    md: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    assert md["spec"]["rollout"]["backtest"]["dataset"]["uri"] == modelstore.uri_of(modelstore.LABELLED)
    assert md["spec"]["model"]["sha256"] == modelstore.sha256_of("iris-v1.joblib")
    return md


def candidate(version: str, artifact: str, fmt: str) -> dict[str, Any]:
    md = example()
    md["spec"]["model"].update(
        version=version, uri=modelstore.uri_of(artifact), sha256=modelstore.sha256_of(artifact), format=fmt
    )
    return md


def backtest_jobs(cluster: Cluster, namespace: str) -> list[client.V1Job]:
    jobs = client.BatchV1Api(cluster.api).list_namespaced_job(
        namespace, label_selector=f"rollwise.dev/backtest-of={NAME}"
    )
    return list(jobs.items)


def test_a_less_accurate_candidate_is_rolled_back_by_its_backtest_before_any_traffic_and_a_good_one_walks_on(
    cluster: Cluster,
    operator: Operator,
    namespace: str,
    serving_image: None,
    batch_image: str,
    model_store: None,
) -> None:
    assert apply(namespace, example()).returncode == 0
    wait_healthy(cluster, namespace, NAME, timeout=180)
    assert backtest_jobs(cluster, namespace) == []  # the first version has nothing to be compared with

    with Load(service_url(cluster, namespace, NAME), rate_per_second=10).running() as load:
        load.steady()
        changed = time.monotonic()
        assert apply(namespace, candidate("2.0.0", "iris-mislabel.py", "python")).returncode == 0
        weights: list[int] = []
        seen: dict[str, Any] = {}

        def rolled_back() -> bool:
            status = get_md(cluster, namespace, NAME).get("status", {})
            weights.append(int(status.get("weight") or 0))
            backtest = status.get("backtest") or {}
            if backtest.get("phase") == "Running":
                seen["running"] = backtest
                seen["jobs"] = seen.get("jobs") or backtest_jobs(cluster, namespace)
            return status.get("phase") == "RolledBack"

        with_status(cluster, namespace, lambda: wait_until("rolled back", rolled_back, 420, every=1), NAME)
        took = time.monotonic() - changed
        answered = load.versions_since(changed)
        failures = load.failures_since(changed)

    status = get_md(cluster, namespace, NAME)["status"]
    assert set(weights) == {0}, weights
    assert answered == {"1.0.0"}, answered  # no live request reached the candidate
    assert failures == [], failures[:3]
    reasons = {c["type"]: c.get("reason") for c in status.get("conditions", [])}
    assert "BacktestFailed" in reasons.values(), status.get("conditions")
    backtest = status["backtest"]
    assert backtest["phase"] == "Failed", backtest
    accuracy = next(m for m in backtest["metrics"] if m["name"] == "accuracy")
    assert accuracy["verdict"] == "Failed" and accuracy["candidate"] < accuracy["baseline"] - 4, accuracy
    last = status["history"][0]  # newest first
    assert last["version"] == "2.0.0" and last["outcome"] == "RolledBack", last
    assert str(last.get("backtest", "")).startswith("Failed: accuracy"), last
    jobs = seen.get("jobs") or backtest_jobs(cluster, namespace)
    assert jobs, f"no backtest Job seen; backtest status: {backtest}"
    job = jobs[0]
    assert job.spec.completion_mode == "Indexed" and job.spec.completions == 2
    assert (job.metadata.owner_references or [])[0].kind == "ModelDeployment"
    events = {e.reason for e in cluster.core.list_namespaced_event(namespace).items}
    assert {"BacktestRunning", "BacktestFailed"} <= events, events
    print(
        f"\nbacktest: 2.0.0 rolled back {took:.0f}s after the change, weight 0 throughout, "
        f"{len(load.since(changed))} live answers all from 1.0.0: accuracy candidate "
        f"{accuracy['candidate']} vs stable {accuracy['baseline']}, bound {accuracy.get('bound')}"
    )

    changed = time.monotonic()
    assert apply(namespace, candidate("3.0.0", "iris-v1.joblib", "sklearn")).returncode == 0
    walked: list[int] = []

    def promoted() -> bool:
        status = get_md(cluster, namespace, NAME).get("status", {})
        if (status.get("backtest") or {}).get("phase") == "Passed":
            walked.append(int(status.get("weight") or 0))
        return bool(status.get("stableVersion") == "3.0.0" and status.get("phase") == "Healthy")

    with_status(cluster, namespace, lambda: wait_until("promoted", promoted, 420, every=1), NAME)
    took = time.monotonic() - changed
    assert 10 in walked, walked  # the first step ran after the pass
    status = get_md(cluster, namespace, NAME)["status"]
    assert (status["history"][0]["version"], status["history"][0]["outcome"]) == ("3.0.0", "Promoted")
    events = {e.reason for e in cluster.core.list_namespaced_event(namespace).items}
    assert "BacktestPassed" in events, events
    wait_until("the passed backtest's Job deleted", lambda: not backtest_jobs(cluster, namespace), 60)
    print(f"backtest: 3.0.0 passed and was promoted {took:.0f}s after the change")
