"""inputDrift on the cluster (issue 14): the candidate's inputs since the analysis started against
the reference the model ships (the example models' `iris-reference.json`, mounted from a hostPath
claim), read from the server's buckets and reference shares through the real Prometheus.

Traffic drawn from the whole Iris dataset matches the reference and the candidate is promoted;
traffic of one species only (valid rows, inside the feature schema) does not, and it is rolled back
naming the feature.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris

from tests.conftest import Cluster, wait_until
from tests.integration.conftest import Operator
from tests.integration.test_operator import apply, get_md, wait_healthy
from tests.integration.traffic import (
    ANALYSIS,
    Load,
    candidate_pods_ready,
    promoted,
    rolled_back,
    service_url,
    with_reference,
    with_status,
)

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.prometheus, pytest.mark.slow]

DRIFT_CHECK = {"name": "inputs", "builtin": "inputDrift", "threshold": {"max": 0.2}}


def bodies(rows: np.ndarray) -> list[bytes]:
    """One OIP request per row, in a shuffled order (seeded)."""
    order = np.random.default_rng(0).permutation(len(rows))
    return [
        json.dumps(
            {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": rows[i].tolist()}]}
        ).encode()
        for i in order
    ]


IRIS = load_iris()
ALL_ROWS = bodies(IRIS.data)
VIRGINICA = bodies(IRIS.data[IRIS.target == 2])


def iris(version: str, artifact: str, claim: str) -> dict[str, Any]:
    rollout = {
        "canary": {"steps": [{"setWeight": 50}, {"analysis": {}}]},
        "analysis": {**ANALYSIS, "metrics": [DRIFT_CHECK]},
        "progressDeadlineSeconds": 120,
    }
    return with_reference(version, artifact, claim, rollout)


@pytest.fixture
def stable(
    cluster: Cluster, operator: Operator, namespace: str, serving_image: None, model_store: None,
    reference_claim: str,
) -> str:  # fmt: skip
    assert apply(namespace, iris("1.0.0", "iris-v1.joblib", reference_claim)).returncode == 0
    wait_healthy(cluster, namespace, "iris", timeout=180)
    return reference_claim


@pytest.mark.parametrize(
    ("rows", "outcome"),
    [
        pytest.param(ALL_ROWS, "promoted", id="inputs like the training data: promoted"),
        pytest.param(VIRGINICA, "rolled back", id="one species only: rolled back on inputDrift"),
    ],
)
def test_input_drift_judges_the_candidates_inputs_against_the_models_reference(
    cluster: Cluster, namespace: str, stable: str, rows: list[bytes], outcome: str
) -> None:
    with Load(service_url(cluster, namespace, "iris"), rate_per_second=20, bodies=rows).running() as load:
        load.steady()
        assert apply(namespace, iris("2.0.0", "iris-v2.joblib", stable)).returncode == 0
        wait_until("the candidate to take traffic", lambda: candidate_pods_ready(cluster, namespace), 120)
        took_traffic = time.monotonic()
        done = (lambda: promoted(cluster, namespace, "2.0.0")) if outcome == "promoted" else (
            lambda: rolled_back(cluster, namespace)
        )  # fmt: skip
        with_status(cluster, namespace, lambda: wait_until(outcome, done, 150))
        elapsed = time.monotonic() - took_traffic
    status = get_md(cluster, namespace, "iris")["status"]
    history = status["history"][0]
    inputs = next(m for m in status["analysis"]["metrics"] if m["name"] == "inputs")
    assert "vs reference" in inputs["message"], inputs
    assert inputs["comparison"]["candidateSamples"] > 0, inputs
    if outcome == "promoted":
        assert history["outcome"] == "Promoted" and inputs["verdict"] == "Successful", inputs
    else:
        assert status["stableVersion"] == "1.0.0" and inputs["verdict"] == "Failed", inputs
        assert inputs["message"].endswith(": drifted") and "inputs" in history["message"], history
    print(f"\n{outcome} {elapsed:.1f}s after the candidate took traffic; {inputs['message']}")


MONITOR_INTERVAL = 10


def test_a_promoted_model_whose_inputs_drift_is_flagged_and_rolled_back_to_the_previous_stable(
    cluster: Cluster, namespace: str, stable: str
) -> None:
    """Validation after promotion (#15): `spec.monitoring` watches 2.0.0 once promoted. Its inputs
    move to one species only; `ModelHealthy` turns False, and with `onDegraded: rollback` 1.0.0
    serves again, with no failed request. failureLimit 0 here (one failing look; the default needs
    two in a row)."""
    check = {**DRIFT_CHECK, "name": "drift"}
    predictions = {"name": "predictions", "builtin": "predictionDrift", "threshold": {"max": 0.2}}
    monitoring = {
        "metrics": [check, predictions],
        "intervalSeconds": MONITOR_INTERVAL,
        "failureLimit": 0,
        "onDegraded": "rollback",
    }
    with Load(
        service_url(cluster, namespace, "iris"), rate_per_second=20, bodies=list(ALL_ROWS)
    ).running() as load:
        load.steady()
        md = iris("2.0.0", "iris-v2.joblib", stable)
        md["spec"]["monitoring"] = monitoring
        assert apply(namespace, md).returncode == 0
        with_status(
            cluster,
            namespace,
            lambda: wait_until("promoted", lambda: promoted(cluster, namespace, "2.0.0"), 150),
        )

        def rolled_back_to_v1() -> bool:
            status = get_md(cluster, namespace, "iris")["status"]
            dep = cluster.apps.read_namespaced_deployment("iris-stable", namespace)
            want = dep.spec.replicas or 0
            rolled = dep.status.observed_generation == dep.metadata.generation and (
                (dep.status.updated_replicas or 0) == want == (dep.status.available_replicas or 0)
            )
            return bool(
                status.get("phase") == "RolledBack" and status.get("stableVersion") == "1.0.0" and rolled
            )

        def model_healthy() -> dict[str, Any]:
            conditions = get_md(cluster, namespace, "iris")["status"].get("conditions", [])
            return next((c for c in conditions if c["type"] == "ModelHealthy"), {})

        with_status(cluster, namespace, lambda: wait_until(
            "a healthy verdict on training-like inputs", lambda: model_healthy().get("status") == "True", 60
        ))  # fmt: skip
        load.bodies[:] = VIRGINICA
        drifted = time.monotonic()
        with_status(cluster, namespace, lambda: wait_until(
            "ModelHealthy False", lambda: model_healthy().get("status") == "False" or rolled_back_to_v1(), 60
        ))  # fmt: skip
        flagged = time.monotonic() - drifted
        with_status(cluster, namespace, lambda: wait_until("back on 1.0.0", rolled_back_to_v1, 120))
        wait_until("only 1.0.0 answering", lambda: load.versions_since(time.monotonic() - 2) == {"1.0.0"}, 60)
        back = time.monotonic() - drifted
        settled = time.monotonic()
        time.sleep(3)
        versions_after = load.versions_since(settled)

        def watched_again() -> dict[str, Any] | None:
            """1.0.0, watched in its turn on the same drifted traffic: both checks read."""
            mon = get_md(cluster, namespace, "iris")["status"].get("monitoring") or {}
            return mon if mon.get("looks", 0) >= 1 else None

        again = wait_until("1.0.0's first look", watched_again, 60)
        failed = [r for r in load.results if r[1] != 200]
    status = get_md(cluster, namespace, "iris")["status"]
    entry = status["history"][0]
    assert (entry["version"], entry["outcome"]) == ("2.0.0", "RolledBack"), entry
    assert entry["message"].startswith("2.0.0 degraded after promotion, back to 1.0.0: drift:"), entry
    readings = {m["name"]: m for m in again["metrics"]}
    assert readings["predictions"]["message"].startswith("class shares PSI"), readings
    assert "vs reference" in readings["predictions"]["message"], readings
    assert readings["predictions"]["verdict"] == "Failed", readings  # all virginica, against thirds
    assert versions_after == {"1.0.0"}, versions_after
    assert failed == [], failed[:5]
    print(f"\n1.0.0 on the same traffic: {readings['predictions']['message']}")
    print(
        f"ModelHealthy False {flagged:.1f}s after the inputs drifted (interval {MONITOR_INTERVAL}s); "
        f"1.0.0 serving all traffic {back:.1f}s after; {len(load.results)} requests, 0 failed"
    )
