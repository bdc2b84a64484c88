"""The gatewayAPI router with a real data plane (issue 19): Traefik v3, built from its Go module
and run on the host by `e2e/cluster.py`, implements the cluster's Gateway `rollwise-gateway/models`;
every request here goes client -> Traefik -> pod on the real node, never through the Service.

What is measured at the client, on the answering model version of each request: the split at each
canary weight over 2 000 requests, header and cookie A/B matches, a shadow's copies (counted by the
candidate's own server) while clients only ever see stable, a bad candidate's rollback, and no
failed request across weight changes, promotion and rollback. Traefik has no RequestMirror filter
(a rule carrying one answers 500), so the shadow runs with `mirroring: pods` (docs/routers.md).
"""

from __future__ import annotations

import copy
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

import pytest

from e2e import cluster as local_cluster
from e2e import components as cfg
from e2e.traffic import BODIES, Load, send
from tests.conftest import Cluster, wait_until
from tests.integration.conftest import Operator, kubectl
from tests.integration.test_operator import apply, get_md, wait_healthy
from tests.integration.test_routers_upstream import act, at_step, wait_status
from tests.integration.traffic import (
    ANALYSIS,
    base_md,
    candidate_pods_ready,
    model,
    prom_value,
    rolled_back,
    send_many,
    with_status,
)

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.prometheus, pytest.mark.slow]

NAME = "iris"
REQUESTS = 2000
TOLERANCE_POINTS = 3.0


def gateway_url() -> str:
    return f"http://{local_cluster.load_topology().host_ip}:{cfg.GATEWAY_PORT}/v2/models/iris/infer"


def http_route(namespace: str) -> dict[str, Any]:
    """The user's route: attached to the cluster's Gateway, opted in for the ModelDeployment."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": NAME, "namespace": namespace, "annotations": {"rollwise.dev/traffic-for": NAME}},
        "spec": {
            "parentRefs": [{"name": cfg.GATEWAY_NAME, "namespace": cfg.GATEWAY_NAMESPACE}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/v2/models/iris"}}],
                    "backendRefs": [{"name": NAME, "port": 80}],
                }
            ],
        },
    }


def md(
    version: str, artifact: str, fmt: str, rollout: dict[str, Any], runtime: dict[str, Any] | None = None
) -> dict[str, Any]:
    doc = base_md()
    doc["spec"]["model"] = model(version, artifact, fmt)
    doc["spec"]["runtime"] = copy.deepcopy(runtime) if runtime is not None else {"replicas": 1}
    doc["spec"]["rollout"] = {
        **copy.deepcopy(rollout),
        "traffic": {"provider": "gatewayAPI", "gatewayAPI": {"httpRoute": NAME, "mirroring": "pods"}},
    }
    return doc


CANARY = {"canary": {"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]}}


def route_accepted(namespace: str) -> bool:
    out = kubectl(
        "-n", namespace, "get", "httproute", NAME, "-o",
        "jsonpath={.status.parents[0].conditions[?(@.type=='Accepted')].status}", check=False,
    )  # fmt: skip
    return out.returncode == 0 and out.stdout.strip() == "True"


def serve_v1(
    cluster: Cluster, namespace: str, rollout: dict[str, Any], runtime: dict[str, Any] | None = None
) -> None:
    assert apply(namespace, http_route(namespace)).returncode == 0
    assert apply(namespace, md("1.0.0", "iris-v1.joblib", "sklearn", rollout, runtime)).returncode == 0
    wait_healthy(cluster, namespace, NAME, timeout=120)
    wait_until("Traefik to accept the HTTPRoute", lambda: route_accepted(namespace), 60)
    # Traefik programs the route on its next configuration: wait for answers through it.
    wait_until(
        "v1 answering through the Gateway", lambda: send(gateway_url(), BODIES[0]) == (200, "1.0.0"), 60
    )


def shares(answers: list[tuple[int, str]]) -> Counter[str]:
    if not all(code == 200 for code, _ in answers):
        raise AssertionError(f"{Counter(code for code, _ in answers)}; one failed answer: {failed_answer()}")
    return Counter(version for _, version in answers)


def failed_answer(tries: int = 500) -> str:
    """The status, headers and body of one failed request through the Gateway: whose refusal it is."""
    for i in range(tries):
        req = urllib.request.Request(gateway_url(), BODIES[i % 3], {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5):
                continue
        except urllib.error.HTTPError as err:
            return f"{err.code} {dict(err.headers)} {err.read()[:300]!r}"
    return f"none in {tries} more requests"


TRAEFIK_BATCHING_SECONDS = 2.0
"""Traefik applies a configuration change this long after loading it (`providersThrottleDuration`,
its default); it writes the route's status when it loads it, which is what a step waits for."""


def measured_split(version: str) -> float:
    """Percent of REQUESTS sent through the Gateway that `version` answered, once Traefik's
    batching has passed since the step began."""
    time.sleep(TRAEFIK_BATCHING_SECONDS + 1)
    counts = shares(send_many(gateway_url(), [{}] * REQUESTS))
    return 100 * counts[version] / REQUESTS


def test_a_canary_through_the_gateway_splits_at_the_client_as_the_steps_say(
    cluster: Cluster, operator: Operator, namespace: str, serving_image: None, model_store: None
) -> None:
    serve_v1(cluster, namespace, CANARY)
    with Load(gateway_url(), rate_per_second=20).running() as load:
        started = time.monotonic()
        assert apply(namespace, md("2.0.0", "iris-v2.joblib", "sklearn", CANARY)).returncode == 0
        wait_status(cluster, namespace, NAME, "paused at 10 %", at_step(1, "Paused", 10))
        at_10 = measured_split("2.0.0")
        act(namespace, NAME, "resume")
        wait_status(cluster, namespace, NAME, "paused at 50 %", at_step(3, "Paused", 50))
        at_50 = measured_split("2.0.0")
        act(namespace, NAME, "resume")  # past the last step: promotion
        wait_status(
            cluster, namespace, NAME, "2.0.0 promoted",
            lambda s: s.get("phase") == "Healthy" and s.get("stableVersion") == "2.0.0",
        )  # fmt: skip
        wait_until(
            "only 2.0.0 answering through the Gateway",
            lambda: load.versions_since(time.monotonic() - 3) == {"2.0.0"},
            60,
        )
        failed = [(round(t - started, 1), code) for t, code, _ in load.failures_since(started)]
        sent = len(load.since(started))
    print(f"\ngateway canary: 10 % step measured {at_10:.1f} %, 50 % step {at_50:.1f} % over {REQUESTS} "
          f"requests each; {len(failed)} of {sent} background requests failed")  # fmt: skip
    assert abs(at_10 - 10) <= TOLERANCE_POINTS, at_10
    assert abs(at_50 - 50) <= TOLERANCE_POINTS, at_50
    assert failed == []


AB = {
    "abTest": {
        "match": [
            {"header": {"name": "x-model-variant", "value": "b"}},
            {"cookie": {"name": "beta", "value": "1"}},
        ]
    }
}


def test_header_and_cookie_matches_reach_only_the_candidate_through_the_gateway(
    cluster: Cluster, operator: Operator, namespace: str, serving_image: None, model_store: None
) -> None:
    serve_v1(cluster, namespace, AB)
    url = gateway_url()
    load = Load(url, rate_per_second=20)
    with load.running():
        started = time.monotonic()
        ab_test_then_abort(cluster, namespace, url)
        failed = load.failures_since(started)
    assert failed == [], failed  # none across the matches going live and the abort


def ab_test_then_abort(cluster: Cluster, namespace: str, url: str) -> None:
    assert apply(namespace, md("2.0.0", "iris-v2.joblib", "sklearn", AB)).returncode == 0
    wait_until(
        "the header match in effect",
        lambda: send(url, BODIES[0], {"x-model-variant": "b"}) == (200, "2.0.0"),
        120,
    )
    by_header = shares(send_many(url, [{"x-model-variant": "b"}] * 300))
    by_cookie = shares(send_many(url, [{"Cookie": "session=x; beta=1"}] * 300))
    others = shares(send_many(url, [{"x-model-variant": "a"}, {"Cookie": "beta=0"}, {}] * 200))
    print(f"\ngateway A/B: header {dict(by_header)}, cookie {dict(by_cookie)}, others {dict(others)}")
    assert by_header == Counter({"2.0.0": 300})
    assert by_cookie == Counter({"2.0.0": 300})
    assert others == Counter({"1.0.0": 600})
    act(namespace, NAME, "abort")
    wait_until(
        "the matches gone after abort",
        lambda: send(url, BODIES[0], {"x-model-variant": "b"}) == (200, "1.0.0"),
        60,
    )
    wait_until("the candidate scaled to 0", lambda: rolled_back(cluster, namespace), 60)


SHADOW = {"shadow": {"durationSeconds": 600}}


def candidate_requests(cluster: Cluster, namespace: str) -> float:
    query = f'sum(rollwise_requests_total{{namespace="{namespace}",track="candidate"}})'
    return prom_value(cluster, query) or 0.0


def test_a_shadow_behind_the_gateway_gets_copies_while_clients_see_only_stable(
    cluster: Cluster, operator: Operator, namespace: str, serving_image: None, model_store: None
) -> None:
    serve_v1(cluster, namespace, SHADOW)
    url = gateway_url()
    assert apply(namespace, md("2.0.0", "iris-v2.joblib", "sklearn", SHADOW)).returncode == 0
    answers: list[tuple[int, str]] = []

    def copied() -> bool:
        answers.extend(send_many(url, [{}] * 100))
        return candidate_requests(cluster, namespace) >= 500

    with_status(cluster, namespace, lambda: wait_until("the shadow to count 500 copies", copied, 180))
    route = kubectl("-n", namespace, "get", "httproute", NAME, "-o", "json").stdout
    assert "RequestMirror" not in route  # Traefik would answer every request of the rule with a 500
    assert shares(answers) == Counter({"1.0.0": len(answers)})
    print(f"\ngateway shadow: {len(answers)} client requests, all answered by 1.0.0; the candidate "
          f"counted {candidate_requests(cluster, namespace):.0f} copies")  # fmt: skip


def test_a_bad_candidate_is_rolled_back_through_the_gateway(
    cluster: Cluster, operator: Operator, namespace: str, serving_image: None, model_store: None
) -> None:
    rollout: dict[str, Any] = {
        "canary": {"steps": [{"setWeight": 50}, {"analysis": {}}]},
        "analysis": copy.deepcopy(ANALYSIS),
        "progressDeadlineSeconds": 120,
    }
    serve_v1(cluster, namespace, rollout)
    with Load(gateway_url(), rate_per_second=25).running() as load:
        load.steady()
        started = time.monotonic()
        assert apply(namespace, md("3.0.0-broken", "iris-broken.py", "python", rollout)).returncode == 0
        wait_until("the bad candidate to take traffic", lambda: candidate_pods_ready(cluster, namespace), 90)
        took_traffic = time.monotonic()
        with_status(
            cluster, namespace, lambda: wait_until("rollback", lambda: rolled_back(cluster, namespace), 120)
        )
        back = time.monotonic()
        wait_until(
            "3 s of clean traffic on 1.0.0",
            lambda: (
                (now := time.monotonic())
                and not load.failures_since(now - 3)
                and load.versions_since(now - 3) == {"1.0.0"}
            ),
            30,
        )
        failed = len(load.failures_since(started))
    assert get_md(cluster, namespace, NAME)["status"]["stableVersion"] == "1.0.0"
    print(f"\ngateway rollback: candidate at 0 replicas {back - took_traffic:.1f}s after its pods took "
          f"traffic; {failed} client requests failed meanwhile (the broken model's own answers)")  # fmt: skip


AUTOSCALED = {
    "resources": {"requests": {"cpu": "100m"}},
    "autoscaling": {
        "minReplicas": 1,
        "maxReplicas": 3,
        "cpuUtilization": 50,
        "scaleDownStabilizationSeconds": 15,
    },
}
HPA_CANARY = {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}}


def hpa_replicas(cluster: Cluster, namespace: str, track: str) -> tuple[int, int, int]:
    """(current replicas, minReplicas, maxReplicas) of a track's HPA."""
    hpa = cluster.autoscaling.read_namespaced_horizontal_pod_autoscaler(f"{NAME}-{track}", namespace)
    return (hpa.status.current_replicas or 0, hpa.spec.min_replicas or 1, hpa.spec.max_replicas)


def test_under_a_load_step_the_stable_hpa_scales_out_and_in_on_real_cpu_while_the_split_holds(
    cluster: Cluster, operator: Operator, namespace: str, serving_image: None, model_store: None
) -> None:
    """metrics-server reads the pods' CPU from the real kubelet; the HPA scales the stable track
    out under a load step through the Gateway during a canary's 20 % pause and back in after it.
    The split the clients see stays within 5 points of the step's weight throughout."""
    serve_v1(cluster, namespace, HPA_CANARY, AUTOSCALED)
    assert apply(namespace, md("2.0.0", "iris-v2.joblib", "sklearn", HPA_CANARY, AUTOSCALED)).returncode == 0
    wait_status(cluster, namespace, NAME, "paused at 20 %", at_step(1, "Paused", 20))
    url = gateway_url()
    seen: list[tuple[float, str, tuple[int, int, int], tuple[int, int, int]]] = []
    answers: list[tuple[int, str]] = []
    started = time.monotonic()
    # The load step: as fast as 8 clients go, until the stable HPA has scaled out (and 60 s at least).
    while time.monotonic() - started < 240:
        answers.extend(send_many(url, [{}] * 200, workers=8))
        stable, candidate = (
            hpa_replicas(cluster, namespace, "stable"),
            hpa_replicas(cluster, namespace, "candidate"),
        )
        seen.append((time.monotonic() - started, "load", stable, candidate))
        if stable[0] >= 2 and time.monotonic() - started >= 60:
            break
    peak = max(s[2][0] for s in seen)
    loaded = time.monotonic() - started
    share = 100 * sum(1 for _, v in answers if v == "2.0.0") / len(answers)
    failed = [code for code, _ in answers if code != 200]
    # After the step: a trickle of traffic, and the stable HPA scales back in.
    quiet = time.monotonic()
    trickle: list[tuple[int, str]] = []

    def scaled_in() -> bool:
        trickle.extend(send_many(url, [{}] * 5, workers=1))
        time.sleep(1)
        stable = hpa_replicas(cluster, namespace, "stable")
        seen.append(
            (time.monotonic() - started, "quiet", stable, hpa_replicas(cluster, namespace, "candidate"))
        )
        return stable[0] == 1

    with_status(cluster, namespace, lambda: wait_until("the stable HPA to scale back in", scaled_in, 240))
    status = get_md(cluster, namespace, NAME)["status"]
    print(
        f"\ngateway + HPA: {len(answers)} requests in {loaded:.0f}s of load, {share:.1f} % answered by the "
        f"20 % candidate; stable scaled 1 -> {peak} and back to 1 {time.monotonic() - quiet:.0f}s after "
        f"the load stopped; {len(failed)} failed; HPA (current, min, max) stable/candidate over time: "
        f"{[(round(t), phase, st, ca) for t, phase, st, ca in seen[:: max(1, len(seen) // 12)]]}"
    )
    assert peak >= 2, seen
    assert abs(share - 20) <= 5, share
    assert failed == [] and all(code == 200 for code, _ in trickle)
    for _, _, stable, candidate in seen:
        assert candidate[0] <= candidate[2] and stable[0] <= stable[2]  # each within its own bounds
    assert (status["phase"], status["weight"]) == ("Paused", 20)  # the load moved no step


STICKY = {"abTest": {"userHash": {"header": "x-user-id", "weight": 20}}}


def test_a_user_hash_split_behind_the_gateway_is_sticky_per_user(
    cluster: Cluster, operator: Operator, namespace: str, serving_image: None, model_store: None
) -> None:
    """Behind the Gateway the stable pods forward by the user's hash (docs/routers.md): each user
    always gets the same version, and about the split's share of users get the candidate."""
    serve_v1(cluster, namespace, STICKY)
    url = gateway_url()
    assert apply(namespace, md("2.0.0", "iris-v2.joblib", "sklearn", STICKY)).returncode == 0
    users = [f"user-{i}" for i in range(400)]
    wait_until(
        "some users on the candidate",
        lambda: any(v == "2.0.0" for _, v in send_many(url, [{"x-user-id": u} for u in users[:50]])),
        120,
    )
    # The split lives in the stable pods' flags: every stable pod must run them. Wait for the
    # stable Deployment's rollout, the old pods' preStop drain (5 s) and Traefik's batching.
    kubectl("-n", namespace, "rollout", "status", f"deployment/{NAME}-stable", "--timeout=120s")
    time.sleep(5 + TRAEFIK_BATCHING_SECONDS + 1)
    first = send_many(url, [{"x-user-id": u} for u in users])
    again = send_many(url, [{"x-user-id": u} for u in reversed(users)])
    assert all(code == 200 for code, _ in first + again)
    side = {u: v for u, (_, v) in zip(users, first, strict=True)}
    flipped = [u for u, (_, v) in zip(reversed(users), again, strict=True) if side[u] != v]
    share = 100 * sum(1 for v in side.values() if v == "2.0.0") / len(users)
    print(
        f"\ngateway user hash: {share:.1f} % of {len(users)} users on the candidate; "
        f"{len(flipped)} changed side"
    )
    assert flipped == []
    # 20 % of 400 users: a binomial standard deviation is 2 points; 4 of them either side
    assert 12 <= share <= 28, share
