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
