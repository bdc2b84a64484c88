"""Blue/green, A/B and shadow end to end (issue 5) with the default `replicas` router: real serving
pods on the real node, real Prometheus, live traffic recorded per request.

What each strategy promises a client, checked from the client's side:
- blue/green: the preview runs at full size and is judged on preview traffic while every live
  request is answered by stable; the switch moves all live traffic at once; the old stable stays
  up for scaleDownDelaySeconds; a bad preview never reaches a live client.
- A/B by user hash: the same user id always lands on the same side, and over 10 000 ids the
  candidate's share is within ±3 points of the weight.
- shadow: the candidate receives a copy of live traffic and is judged on it; clients only ever
  see stable's answers, so a broken shadow costs no live request.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from rollwise_serving.forwarding import bucket_of

from tests.conftest import Cluster, wait_until
from tests.integration import traffic
from tests.integration.conftest import Operator, kubectl
from tests.integration.test_operator import apply, get_md, wait_healthy
from tests.integration.traffic import (
    Load,
    base_md,
    candidate_pods_ready,
    model,
    prom_value,
    promoted,
    rolled_back,
    send_many,
    service_url,
    with_status,
)

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.prometheus, pytest.mark.slow]

ANALYSIS: dict[str, Any] = {**traffic.ANALYSIS, "count": 2}


def md_with(version: str, artifact: str, fmt: str, rollout: dict[str, Any]) -> dict[str, Any]:
    md = base_md()
    md["spec"]["model"] = model(version, artifact, fmt)
    md["spec"]["runtime"] = {"replicas": 2}
    md["spec"]["rollout"] = {"analysis": ANALYSIS, "progressDeadlineSeconds": 120, **rollout}
    return md


@pytest.fixture
def stable_v1(
    cluster: Cluster, operator: Operator, namespace: str, serving_image: None, model_store: None
) -> None:
    """v1 (scikit-learn) Healthy as stable, with no rollout block yet (each test adds its own)."""
    md = md_with("1.0.0", "iris-v1.joblib", "sklearn", {})
    del md["spec"]["rollout"]
    assert apply(namespace, md).returncode == 0
    wait_healthy(cluster, namespace, "iris", timeout=120)


@pytest.fixture
def live(cluster: Cluster, namespace: str, stable_v1: None) -> Iterator[Load]:
    """Live clients on the `iris` Service."""
    with Load(service_url(cluster, namespace, "iris")).running() as load:
        load.steady()
        yield load


def deployment_ready(cluster: Cluster, namespace: str, name: str) -> int:
    """Ready pods of a Deployment; 0 once it is deleted."""
    try:
        return cluster.apps.read_namespaced_deployment(name, namespace).status.ready_replicas or 0
    except ApiException as err:
        if err.status == 404:
            return 0
        raise


# --- blue/green ------------------------------------------------------------------------------------

BLUE_GREEN = {
    "blueGreen": {"prePromotionAnalysis": {}, "autoPromotionSeconds": 0, "scaleDownDelaySeconds": 15}
}


def test_blue_green_judges_the_preview_then_switches_all_traffic_and_keeps_blue(
    cluster: Cluster, namespace: str, live: Load
) -> None:
    started = time.monotonic()
    assert apply(namespace, md_with("2.0.0", "iris-v2.joblib", "sklearn", BLUE_GREEN)).returncode == 0
    wait_until("the preview at full size", lambda: candidate_pods_ready(cluster, namespace, at_least=2), 90)
    preview_up = time.monotonic()
    # A smoke test against the preview Service: the traffic its pre-promotion analysis judges.
    with Load(service_url(cluster, namespace, "iris-candidate"), rate_per_second=15).running() as smoke:
        smoke.steady(10)
        assert live.versions_since(preview_up) == {"1.0.0"}  # live clients never see the preview

        def switched() -> bool:
            return live.versions_since(time.monotonic() - 2) == {"2.0.0"}

        with_status(cluster, namespace, lambda: wait_until("the switch to green", switched, 120))
        switched_at = time.monotonic()
        status = get_md(cluster, namespace, "iris")["status"]
        assert status["analysis"]["verdict"] == "Successful", status["analysis"]
        assert {m["name"]: m["verdict"] for m in status["analysis"]["metrics"]} == {
            "success-rate": "Successful",
            "latency": "Successful",
        }
        assert smoke.versions_since(preview_up) == {"2.0.0"}
    # Blue is kept at full size through scaleDownDelaySeconds, as the instant rollback.
    assert deployment_ready(cluster, namespace, "iris-stable") == 2
    status = get_md(cluster, namespace, "iris")["status"]
    assert status["stableVersion"] == "1.0.0" and status["weight"] == 100, status
    with_status(
        cluster,
        namespace,
        lambda: wait_until("promotion", lambda: promoted(cluster, namespace, "2.0.0"), 120),
    )
    held = time.monotonic() - switched_at
    assert held >= 10, f"blue went away {held:.1f}s after the switch; scaleDownDelaySeconds is 15"
    wait_until(
        "the old preview scaled away", lambda: deployment_ready(cluster, namespace, "iris-candidate") == 0, 60
    )
    assert live.failures_since(started) == []
    print(f"\nblue/green: switched {switched_at - started:.0f}s after the change, blue kept {held:.0f}s")


def test_a_bad_blue_green_preview_never_reaches_a_live_client(
    cluster: Cluster, namespace: str, live: Load
) -> None:
    started = time.monotonic()
    bad = md_with("3.0.0-broken", "iris-broken.py", "python", BLUE_GREEN)
    assert apply(namespace, bad).returncode == 0
    wait_until("the preview", lambda: candidate_pods_ready(cluster, namespace, at_least=2), 90)
    with Load(service_url(cluster, namespace, "iris-candidate"), rate_per_second=15).running() as smoke:
        with_status(
            cluster, namespace, lambda: wait_until("rollback", lambda: rolled_back(cluster, namespace), 120)
        )
        assert smoke.failures_since(started), "the broken preview should have failed its smoke traffic"
    status = get_md(cluster, namespace, "iris")["status"]
    assert status["stableVersion"] == "1.0.0"
    assert {m["name"]: m["verdict"] for m in status["analysis"]["metrics"]}["success-rate"] == "Failed"
    assert live.failures_since(started) == []
    assert live.versions_since(started) == {"1.0.0"}


def reaches_candidate(url: str, headers: dict[str, str]) -> None:
    """Wait until the stable pods' forwards reach the candidate's pod through its Service.

    The step counts as routed once the Deployments say so; kube-proxy programs the candidate
    Service's new endpoint a moment later (seconds on a busy 2-core machine). Until then a forward
    fails and stable answers (counted `failed`): forwarding moves traffic, never breaks it.
    """
    wait_until(
        "forwarding to reach the candidate", lambda: send_many(url, [headers] * 5) == [(200, "2.0.0")] * 5, 30
    )


# --- A/B by user hash -------------------------------------------------------------------------------

AB_WEIGHT = 30


def test_ab_user_hash_is_sticky_and_splits_ten_thousand_users_within_three_points(
    cluster: Cluster, namespace: str, live: Load
) -> None:
    ab = {
        "abTest": {"userHash": {"header": "x-user-id", "weight": AB_WEIGHT}}
    }  # no analysis: a human ends it
    assert apply(namespace, md_with("2.0.0", "iris-v2.joblib", "sklearn", ab)).returncode == 0

    def routing() -> bool:
        md = get_md(cluster, namespace, "iris")
        return md["status"].get("phase") == "Paused" and candidate_pods_ready(cluster, namespace)

    with_status(cluster, namespace, lambda: wait_until("the A/B split in effect", routing, 120))
    url = service_url(cluster, namespace, "iris")
    reaches_candidate(url, {"x-user-id": next(f"u{i}" for i in range(999) if bucket_of(f"u{i}") < AB_WEIGHT)})
    users = [f"user-{i}" for i in range(10_000)]
    first = send_many(url, [{"x-user-id": u} for u in users])
    assert all(code == 200 for code, _ in first), [c for c, _ in first if c != 200][:10]
    side = {u: v for u, (_, v) in zip(users, first, strict=True)}
    share = 100 * sum(v == "2.0.0" for v in side.values()) / len(users)
    # Sticky: every user lands where the shared bucket function says, and again on a second visit.
    expected = {u: "2.0.0" if bucket_of(u) < AB_WEIGHT else "1.0.0" for u in users}
    wrong = [u for u in users if side[u] != expected[u]]
    forwards = prom_by(
        cluster, f'sum by (result) (rollwise_forward_total{{namespace="{namespace}"}})', "result"
    )
    assert not wrong, f"{len(wrong)} users on the wrong side, e.g. {wrong[:5]}; forwards {forwards}"
    assert abs(share - AB_WEIGHT) <= 3, f"{share:.1f} % of users on the candidate; weight {AB_WEIGHT}"
    again = users[::10]
    second = send_many(url, [{"x-user-id": u} for u in again])
    assert [v for _, v in second] == [side[u] for u in again]
    # Requests without the header stay on stable.
    assert live.versions_since(time.monotonic() - 5) == {"1.0.0"}
    print(f"\nA/B user hash: {share:.2f} % of 10 000 users on the candidate (weight {AB_WEIGHT})")


def test_ab_by_header_and_cookie_without_a_proxy(cluster: Cluster, namespace: str, live: Load) -> None:
    match = [{"header": {"name": "x-variant", "value": "b"}}, {"cookie": {"name": "beta", "value": "yes"}}]
    assert (
        apply(
            namespace, md_with("2.0.0", "iris-v2.joblib", "sklearn", {"abTest": {"match": match}})
        ).returncode
        == 0
    )

    def routing() -> bool:
        md = get_md(cluster, namespace, "iris")
        return md["status"].get("phase") == "Paused" and candidate_pods_ready(cluster, namespace)

    with_status(cluster, namespace, lambda: wait_until("the A/B match in effect", routing, 120))
    url = service_url(cluster, namespace, "iris")
    reaches_candidate(url, {"x-variant": "b"})
    cases = [
        ({"x-variant": "b"}, "2.0.0"),
        ({"X-Variant": "b"}, "2.0.0"),
        ({"x-variant": "a"}, "1.0.0"),
        ({"cookie": "session=1; beta=yes"}, "2.0.0"),
        ({"cookie": "beta=no"}, "1.0.0"),
        ({}, "1.0.0"),
    ]
    answers = send_many(url, [h for h, _ in cases for _ in range(50)])
    got = [answers[i * 50 : (i + 1) * 50] for i in range(len(cases))]
    for (headers, version), seen in zip(cases, got, strict=True):
        wrong = [v for _, v in seen if v != version]
        assert not wrong, f"{headers}: {len(wrong)} of 50 answered by {set(wrong)}, not {version}"
    kubectl_annotate(namespace, "promote-full:1")
    with_status(
        cluster,
        namespace,
        lambda: wait_until("promotion", lambda: promoted(cluster, namespace, "2.0.0"), 120),
    )
    # Old stable pods drain for their preStop seconds, then every answer is the new stable's.
    wait_until("every answer from 2.0.0", lambda: {v for _, v in send_many(url, [{}] * 20)} == {"2.0.0"}, 30)


def kubectl_annotate(namespace: str, action: str) -> None:
    kubectl("-n", namespace, "annotate", "md", "iris", "--overwrite", f"rollwise.dev/action={action}")


def prom_by(cluster: Cluster, query: str, label: str) -> dict[str, float]:
    qs = urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(f"{cluster.prometheus_url}/api/v1/query?{qs}", timeout=5) as resp:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in json.load(resp)["data"]["result"]}


# --- shadow -----------------------------------------------------------------------------------------

SHADOW = {"shadow": {"analysis": {}}}
SHADOW_METRICS = [
    {"name": "success-rate", "builtin": "successRate", "threshold": {"min": 99}},
    {"name": "prediction-drift", "builtin": "predictionDrift", "threshold": {"max": 0.2}},
]


def mirrored(cluster: Cluster, namespace: str) -> float:
    query = f'sum(rollwise_requests_total{{namespace="{namespace}", track="candidate"}})'
    return prom_value(cluster, query) or 0.0


def test_shadow_mirrors_live_traffic_and_clients_only_see_stable(
    cluster: Cluster, namespace: str, live: Load
) -> None:
    started = time.monotonic()
    md = md_with("2.0.0", "iris-v2.joblib", "sklearn", SHADOW)
    md["spec"]["rollout"]["analysis"] = {**ANALYSIS, "metrics": SHADOW_METRICS}
    assert apply(namespace, md).returncode == 0
    wait_until("the shadow to receive mirrored requests", lambda: mirrored(cluster, namespace) >= 20, 120)
    assert live.versions_since(started) == {"1.0.0"}
    with_status(
        cluster,
        namespace,
        lambda: wait_until("promotion", lambda: promoted(cluster, namespace, "2.0.0"), 180),
    )
    status = get_md(cluster, namespace, "iris")["status"]
    assert {m["name"]: m["verdict"] for m in status["analysis"]["metrics"]} == {
        "success-rate": "Successful",
        "prediction-drift": "Successful",
    }
    assert live.failures_since(started) == []
    print(f"\nshadow: promoted {time.monotonic() - started:.0f}s after the change")


def test_a_broken_shadow_is_rolled_back_without_a_failed_live_request(
    cluster: Cluster, namespace: str, live: Load
) -> None:
    started = time.monotonic()
    md = md_with("3.0.0-broken", "iris-broken.py", "python", SHADOW)
    md["spec"]["rollout"]["analysis"] = {**ANALYSIS, "metrics": SHADOW_METRICS}
    assert apply(namespace, md).returncode == 0
    with_status(
        cluster, namespace, lambda: wait_until("rollback", lambda: rolled_back(cluster, namespace), 120)
    )
    status = get_md(cluster, namespace, "iris")["status"]
    assert status["stableVersion"] == "1.0.0"
    assert {m["name"]: m["verdict"] for m in status["analysis"]["metrics"]}["success-rate"] == "Failed"
    assert live.failures_since(started) == []
    assert live.versions_since(started) == {"1.0.0"}
    print(f"\nbroken shadow: rolled back {time.monotonic() - started:.0f}s after the change, 0 live failures")
