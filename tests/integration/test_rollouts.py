"""Canary rollouts end to end (issue 5): real serving pods on the real node, real Prometheus, the
operator judging candidates on the server's own metrics while a load generator runs throughout.

A good candidate walks every step and is promoted; a candidate that fails its predictions is
rolled back, and the time from its pods taking traffic to 100 % stable is printed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from e2e import cluster as local_cluster
from e2e.traffic import send
from tests.conftest import Cluster, wait_until
from tests.integration.conftest import Operator
from tests.integration.test_operator import apply, get_md, wait_healthy
from tests.integration.traffic import (
    ANALYSIS,
    Load,
    base_md,
    candidate_pods_ready,
    model,
    promoted,
    rolled_back,
    service_url,
    with_status,
)

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.prometheus, pytest.mark.slow]


def canary(
    version: str, artifact: str, fmt: str, *, metrics: list[dict[str, Any]] | None = None, deadline: int = 120
) -> dict[str, Any]:
    md = base_md()
    md["spec"]["model"] = model(version, artifact, fmt)
    md["spec"]["runtime"] = {"replicas": 2}
    analysis = dict(ANALYSIS)
    if metrics is not None:
        analysis["metrics"] = metrics
    md["spec"]["rollout"] = {
        "canary": {"steps": [{"setWeight": 50}, {"analysis": {}}]},
        "analysis": analysis,
        "progressDeadlineSeconds": deadline,
    }
    return md


def rolled_back_in(
    cluster: Cluster, namespace: str, md: dict[str, Any], timeout: float = 120
) -> tuple[float, Any]:
    """Apply a bad candidate and wait for its rollback: seconds from its pods taking traffic to
    the rollback, and the status, stable still at 1.0.0."""
    assert apply(namespace, md).returncode == 0
    wait_until("the candidate to take traffic", lambda: candidate_pods_ready(cluster, namespace), 90)
    took_traffic = time.monotonic()
    with_status(
        cluster, namespace, lambda: wait_until("rollback", lambda: rolled_back(cluster, namespace), timeout)
    )
    elapsed = time.monotonic() - took_traffic
    status = get_md(cluster, namespace, "iris")["status"]
    assert status["stableVersion"] == "1.0.0"
    return elapsed, status


def metric(status: Any, name: str) -> Any:
    """One check's result in the status's analysis."""
    return next(m for m in status["analysis"]["metrics"] if m["name"] == name)


@pytest.fixture
def serving(
    cluster: Cluster, operator: Operator, namespace: str, serving_image: None, model_store: None
) -> None:
    """v1 (scikit-learn) serving as stable before the load starts."""
    assert apply(namespace, canary("1.0.0", "iris-v1.joblib", "sklearn")).returncode == 0
    wait_healthy(cluster, namespace, "iris", timeout=120)


@pytest.fixture
def load(cluster: Cluster, namespace: str, serving: None) -> Iterator[Load]:
    with Load(service_url(cluster, namespace, "iris")).running() as generator:
        yield generator


def test_a_good_candidate_walks_every_step_and_is_promoted(
    cluster: Cluster, namespace: str, load: Load
) -> None:
    wait_until("steady traffic", lambda: len(load.results) >= 20, 30)
    started = time.monotonic()
    assert apply(namespace, canary("2.0.0", "iris-v2.joblib", "sklearn")).returncode == 0
    wait_until("the candidate to take traffic", lambda: candidate_pods_ready(cluster, namespace), 90)
    seen_steps: list[int] = []

    def promoted() -> bool:
        md = get_md(cluster, namespace, "iris")
        step = md.get("status", {}).get("currentStep")
        if step is not None and (not seen_steps or seen_steps[-1] != step):
            seen_steps.append(step)
        return bool(md["status"].get("stableVersion") == "2.0.0" and md["status"].get("phase") == "Healthy")

    with_status(cluster, namespace, lambda: wait_until("promotion of 2.0.0", promoted, 180))
    md = get_md(cluster, namespace, "iris")
    assert seen_steps == sorted(seen_steps), seen_steps  # steps only move forward
    assert md["status"]["history"][0]["outcome"] == "Promoted"
    wait_until("every pod to run 2.0.0", lambda: load.versions_since(time.monotonic() - 3) == {"2.0.0"}, 60)
    assert load.failures_since(started) == []
    elapsed = time.monotonic() - started
    print(f"\ngood candidate: promoted {elapsed:.0f}s after the change; steps seen {seen_steps}")


def test_a_failing_candidate_is_rolled_back_within_seconds(
    cluster: Cluster, namespace: str, load: Load
) -> None:
    wait_until("steady traffic", lambda: len(load.results) >= 20, 30)
    assert apply(namespace, canary("3.0.0-broken", "iris-broken.py", "python")).returncode == 0
    wait_until("the bad candidate to take traffic", lambda: candidate_pods_ready(cluster, namespace), 90)
    took_traffic = time.monotonic()

    with_status(
        cluster,
        namespace,
        lambda: wait_until("rollback to stable", lambda: rolled_back(cluster, namespace), 120),
    )
    back = time.monotonic()
    md = get_md(cluster, namespace, "iris")
    assert md["status"]["stableVersion"] == "1.0.0"
    assert md["status"]["weight"] == 0
    assert md["status"]["history"][0]["outcome"] in ("RolledBack", "AnalysisFailed")
    stalled_or_ready = {c["type"]: c for c in md["status"]["conditions"]}
    assert stalled_or_ready["Ready"]["status"] == "False" or md["status"]["phase"] == "RolledBack"
    events = cluster.core.list_namespaced_event(namespace, field_selector="involvedObject.name=iris").items
    assert any(e.type == "Warning" for e in events), [e.reason for e in events]
    # The broken pods answer 500 until kube-proxy drops them from the Service: wait for a clean window.
    wait_until(
        "3 s of traffic with no failure",
        lambda: (
            (now := time.monotonic())
            and not load.failures_since(now - 3)
            and load.versions_since(now - 3) == {"1.0.0"}
        ),
        30,
    )
    last_failure = max(t for t, code, _ in load.results if code != 200)
    print(
        f"\nbad candidate: rolled back (candidate at 0 replicas) {back - took_traffic:.1f}s and last failed "
        f"request {last_failure - took_traffic:.1f}s after its pods took traffic"
    )


def test_a_candidate_failing_30_percent_is_rolled_back_even_when_its_first_looks_have_no_data(
    cluster: Cluster, namespace: str, load: Load
) -> None:
    """Issue 14's case: `inconclusiveLimit` 0, and the first look finds no scraped candidate
    requests. That look is retaken instead of pausing the rollout, and the next one, on counts since
    the analysis started, shows the candidate worse than stable; the status explains it."""
    wait_until("steady traffic", lambda: len(load.results) >= 20, 30)
    md = canary("3.0.0-flaky", "iris-flaky.py", "python")
    md["spec"]["rollout"]["analysis"]["inconclusiveLimit"] = 0
    elapsed, status = rolled_back_in(cluster, namespace, md)
    success = metric(status, "success-rate")
    assert success["verdict"] == "Failed", status["analysis"]
    # Either rule may fail it first: the guard rail (shown below 99 %) or the comparison (shown
    # worse than stable); from a few dozen requests the comparison's interval may still span 0.
    comparison = success["comparison"]
    assert comparison["candidate"] < comparison["stable"], comparison
    assert comparison["candidateSamples"] > 0 and comparison["stableSamples"] > 0
    assert "vs stable" in success["message"] and "success-rate" in status["history"][0]["message"]
    print(f"\n30 % failures: rolled back {elapsed:.1f}s after its pods took traffic; {success['message']}")


AA_METRICS = [
    *ANALYSIS["metrics"],
    {"name": "prediction-drift", "builtin": "predictionDrift", "threshold": {"max": 0.2}},
]


def test_an_aa_candidate_is_promoted_every_time(cluster: Cluster, namespace: str, load: Load) -> None:
    """Issue 14: the same model as stable under a new version, ten times in a row at 25 requests/s,
    judged on success rate, latency and prediction drift. Before the comparison, the drift check
    alone rolled back two of three such candidates (PSI 0.33 and 0.31 from a few dozen requests)."""
    wait_until("steady traffic", lambda: len(load.results) >= 20, 30)
    durations = []
    for run in range(1, 11):
        version = f"1.0.{run}"
        started = time.monotonic()
        assert (
            apply(namespace, canary(version, "iris-v1.joblib", "sklearn", metrics=AA_METRICS)).returncode == 0
        )
        with_status(
            cluster,
            namespace,
            lambda version=version: wait_until(
                f"promotion of {version}", lambda: promoted(cluster, namespace, version), 180
            ),
        )
        history = get_md(cluster, namespace, "iris")["status"]["history"]
        assert history[0]["outcome"] == "Promoted" and history[0]["version"] == version, history[0]
        durations.append(time.monotonic() - started)
    print(f"\nA/A: 10 of 10 promoted, {min(durations):.0f}-{max(durations):.0f}s each")


BAD_CANDIDATES = [
    pytest.param(
        "iris-slow.py",
        None,
        "latency",
        id="a candidate whose p99 latency rises is rolled back",
    ),
    pytest.param(
        "iris-drift.py",
        [{"name": "prediction-drift", "builtin": "predictionDrift", "threshold": {"max": 0.2}}],
        "prediction-drift",
        id="a candidate whose predictions drift from stable's is rolled back",
    ),
]


@pytest.mark.parametrize(("artifact", "metrics", "failed_check"), BAD_CANDIDATES)
def test_a_bad_candidate_is_rolled_back_on_its_signal(
    cluster: Cluster, namespace: str, load: Load, artifact: str, metrics: list[dict[str, Any]] | None,
    failed_check: str,
) -> None:  # fmt: skip
    wait_until("steady traffic", lambda: len(load.results) >= 20, 30)
    elapsed, status = rolled_back_in(
        cluster, namespace, canary("3.0.0-bad", artifact, "python", metrics=metrics)
    )
    assert metric(status, failed_check)["verdict"] == "Failed", status["analysis"]
    print(f"\n{artifact}: rolled back {elapsed:.1f}s after its pods took traffic")


def test_a_candidate_failing_5_percent_of_requests_is_rolled_back_when_the_evidence_ends_the_step(
    cluster: Cluster, namespace: str, load: Load
) -> None:
    """Issue 14: 5 % failures are too few to be shown in three 5 s looks at this traffic; with
    `maxDurationSeconds` the step waits for the evidence instead of passing what it has not seen."""
    wait_until("steady traffic", lambda: len(load.results) >= 20, 30)
    md = canary("3.2.0-flaky5", "iris-flaky5.py", "python")
    md["spec"]["rollout"]["analysis"] |= {"maxDurationSeconds": 300, "inconclusivePolicy": "pause"}
    elapsed, status = rolled_back_in(cluster, namespace, md, timeout=200)
    success = metric(status, "success-rate")
    assert success["verdict"] == "Failed", status["analysis"]
    print(f"\n5 % failures: rolled back {elapsed:.1f}s after its pods took traffic; {success['message']}")


def test_a_candidate_50_ms_slower_than_stable_is_rolled_back_though_its_p99_is_within_the_slo(
    cluster: Cluster, namespace: str, load: Load
) -> None:
    """Issue 14: the demo's analysis has latencyP99 `max: 0.25`, which a candidate 50 ms slower
    than stable meets; the comparison with stable (tolerance 25 ms) rolls it back."""
    wait_until("steady traffic", lambda: len(load.results) >= 20, 30)
    elapsed, status = rolled_back_in(cluster, namespace, canary("3.1.0-slower", "iris-slow50.py", "python"))
    latency = metric(status, "latency")
    assert latency["verdict"] == "Failed", status["analysis"]
    comparison = latency["comparison"]
    assert comparison["candidate"] <= 0.25, comparison  # the SLO alone would have passed it
    assert comparison["lower"] > 0 and comparison["stableSamples"] > 0, comparison
    assert "outside" not in latency["message"] and ": worse" in latency["message"], latency["message"]
    print(f"\n+50 ms: rolled back {elapsed:.1f}s after its pods took traffic; {latency['message']}")


def test_a_candidate_that_refuses_inputs_the_stable_accepts_is_rolled_back(
    cluster: Cluster, namespace: str, load: Load
) -> None:
    """An input-contract change: the candidate's feature schema refuses two rows in three (422).
    Client errors are normally the caller's fault, but these exceed the stable's share of them."""
    load.steady()
    bad = canary("2.1.0-strict", "iris-v2.joblib", "sklearn")
    bad["spec"]["model"]["featureSchema"] = {
        "features": [
            {"name": "sepal_length", "type": "float", "min": 4.0, "max": 5.5},
            {"name": "sepal_width", "type": "float"},
            {"name": "petal_length", "type": "float"},
            {"name": "petal_width", "type": "float"},
        ]
    }
    applied = time.monotonic()
    elapsed, status = rolled_back_in(cluster, namespace, bad)
    assert metric(status, "success-rate")["verdict"] == "Failed", status["analysis"]
    refused = [r for r in load.results if r[0] >= applied and r[1] == 422]
    assert refused, "the strict candidate should have refused some live requests"
    print(f"\ninput-contract change: rolled back {elapsed:.1f}s after its pods took traffic")


FORGED = json.dumps(
    {
        "inputs": [
            {"name": "input-0", "shape": [1, 4], "datatype": "BYTES", "data": ["5.1", "3.5", "a", "0.2"]}
        ]
    }
).encode()


def test_forged_bytes_do_not_get_a_good_candidate_rolled_back(
    cluster: Cluster, namespace: str, load: Load
) -> None:
    """A client sends BYTES no model can read through the Service while a canary runs. The candidate
    is a Python model declaring an FP64 input: before the server read tensors by their declared type
    it failed on the text (500, `server_error`) while the scikit-learn stable refused it (400), and
    the candidate was rolled back for the client's doing. Now both tracks refuse it as a client
    error, and successRate counts a candidate's client errors only beyond stable's share and
    sampling noise, so the random split of the forged requests does not fail it either."""
    wait_until("steady traffic", lambda: len(load.results) >= 20, 30)
    assert apply(namespace, canary("2.0.0-rule", "iris-rule.py", "python")).returncode == 0
    wait_until("the candidate to take traffic", lambda: candidate_pods_ready(cluster, namespace), 90)
    forged: list[int] = []
    stop = threading.Event()

    def forge() -> None:
        url = service_url(cluster, namespace, "iris")
        while not stop.wait(0.2):  # 5 forged requests a second next to 25 real ones
            forged.append(send(url, FORGED)[0])

    thread = threading.Thread(target=forge, daemon=True)
    thread.start()
    try:
        with_status(
            cluster,
            namespace,
            lambda: wait_until("promotion", lambda: promoted(cluster, namespace, "2.0.0-rule"), 180),
        )
    finally:
        stop.set()
        thread.join(10)
    answered = [code for code in forged if code]
    assert len(answered) >= 50 and set(answered) == {400}, sorted(set(forged))
    assert get_md(cluster, namespace, "iris")["status"]["history"][0]["outcome"] == "Promoted"


def test_a_candidate_that_never_gets_ready_is_rolled_back_at_the_deadline(
    cluster: Cluster, namespace: str, load: Load
) -> None:
    wait_until("steady traffic", lambda: len(load.results) >= 20, 30)
    started = time.monotonic()
    bad = canary("4.0.0-tampered", "iris-v2.joblib", "sklearn", deadline=30)
    bad["spec"]["model"]["sha256"] = "0" * 64  # the server refuses to load it: never ready
    assert apply(namespace, bad).returncode == 0
    with_status(
        cluster, namespace, lambda: wait_until("rollback", lambda: rolled_back(cluster, namespace), 120)
    )
    md = get_md(cluster, namespace, "iris")
    assert md["status"]["history"][0]["outcome"] in ("RolledBack", "ProgressDeadlineExceeded")
    assert "deadline" in json.dumps(md["status"]).lower()
    assert load.failures_since(started) == []  # stable served every request throughout
    print(f"\nnever-ready candidate: rolled back {time.monotonic() - started:.0f}s after the change")


def test_with_prometheus_down_a_candidate_is_never_promoted(
    cluster: Cluster, namespace: str, load: Load
) -> None:
    wait_until("steady traffic", lambda: len(load.results) >= 20, 30)
    local_cluster.stop_component("prometheus")
    try:
        assert apply(namespace, canary("2.0.0", "iris-v2.joblib", "sklearn")).returncode == 0
        with_status(
            cluster, namespace, lambda: wait_until("rollback", lambda: rolled_back(cluster, namespace), 120)
        )
        md = get_md(cluster, namespace, "iris")
        assert md["status"]["stableVersion"] == "1.0.0"
        assert all(h["outcome"] != "Promoted" for h in md["status"]["history"])
        messages = json.dumps(md["status"]["analysis"])
        assert "Prometheus" in messages or "circuit" in messages, messages
    finally:
        local_cluster.restart_component("prometheus")
        wait_until(
            "Prometheus back", lambda: local_cluster.http_ok(f"{local_cluster.PROMETHEUS_URL}/-/ready"), 60
        )
