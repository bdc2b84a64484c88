"""The nginx router with a real data plane (issue 19): the community ingress-nginx controller is
retired (March 2026), so the local cluster proves the router's canary Ingress with Traefik's
ingress-nginx compatibility provider (the same Traefik as the Gateway, `e2e/components.py`), which
honours `canary-weight`, `canary-by-header` and `canary-by-cookie`. Every request goes client ->
Traefik -> pod, with the Ingress's host in its Host header.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from typing import Any

import pytest

from e2e.traffic import BODIES, Load, send
from tests.conftest import Cluster, wait_until
from tests.integration.conftest import Operator, kubectl
from tests.integration.test_gateway_traffic import (
    REQUESTS,
    TOLERANCE_POINTS,
    TRAEFIK_BATCHING_SECONDS,
    gateway_url,
    shares,
)
from tests.integration.test_operator import apply, wait_healthy
from tests.integration.test_routers_upstream import act, at_step, wait_status
from tests.integration.traffic import base_md, model, send_many

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.prometheus, pytest.mark.slow]

NAME = "iris"
HOST = "models.rollwise.test"
AT_HOST = {"Host": HOST}


def ingress(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "web",
            "namespace": namespace,
            "annotations": {"rollwise.dev/traffic-for": NAME},
        },
        "spec": {
            "ingressClassName": "nginx",
            "rules": [
                {
                    "host": HOST,
                    "http": {
                        "paths": [
                            {
                                "path": "/v2/models/iris",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": NAME, "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ],
        },
    }


def md(version: str, artifact: str, rollout: dict[str, Any]) -> dict[str, Any]:
    doc = base_md()
    doc["spec"]["model"] = model(version, artifact, "sklearn")
    doc["spec"]["runtime"] = {"replicas": 1}
    doc["spec"]["rollout"] = {
        **copy.deepcopy(rollout),
        "traffic": {"provider": "nginx", "nginx": {"ingress": "web"}},
    }
    return doc


def serve_v1(cluster: Cluster, namespace: str, rollout: dict[str, Any]) -> None:
    assert apply(namespace, ingress(namespace)).returncode == 0
    assert apply(namespace, md("1.0.0", "iris-v1.joblib", rollout)).returncode == 0
    wait_healthy(cluster, namespace, NAME, timeout=120)
    answering = lambda: send(gateway_url(), BODIES[0], AT_HOST) == (200, "1.0.0")  # noqa: E731
    wait_until("v1 answering through Traefik's ingress-nginx provider", answering, 60)


CANARY = {"canary": {"steps": [{"setWeight": 10}, {"pause": {}}]}}


def test_a_canary_ingress_splits_at_the_client_through_traefiks_ingress_nginx_provider(
    cluster: Cluster, operator: Operator, namespace: str, serving_image: None, model_store: None
) -> None:
    serve_v1(cluster, namespace, CANARY)
    with Load(gateway_url(), rate_per_second=20, headers=lambda _: AT_HOST).running() as load:
        started = time.monotonic()
        assert apply(namespace, md("2.0.0", "iris-v2.joblib", CANARY)).returncode == 0
        wait_status(cluster, namespace, NAME, "paused at 10 %", at_step(1, "Paused", 10))
        time.sleep(TRAEFIK_BATCHING_SECONDS + 1)  # the nginx router reads no status from the proxy
        counts = shares(send_many(gateway_url(), [AT_HOST] * REQUESTS))
        at_10 = 100 * counts["2.0.0"] / REQUESTS
        act(namespace, NAME, "abort")
        wait_until(
            "only 1.0.0 answering after the abort",
            lambda: load.versions_since(time.monotonic() - 3) == {"1.0.0"},
            60,
        )
        failed = load.failures_since(started)
    print(
        f"\ningress-nginx via Traefik: 10 % step measured {at_10:.1f} % over {REQUESTS}; {len(failed)} failed"
    )
    assert abs(at_10 - 10) <= TOLERANCE_POINTS, at_10
    assert failed == []
    canary = kubectl("-n", namespace, "get", "ingress", f"{NAME}-candidate", "-o", "json", check=False)
    assert canary.returncode == 0 and '"nginx.ingress.kubernetes.io/canary-weight": "0"' in canary.stdout


AB = {
    "abTest": {
        "match": [
            {"header": {"name": "x-model-variant", "value": "b"}},
            {"cookie": {"name": "beta", "value": "always"}},
        ]
    }
}


def test_header_and_cookie_canaries_reach_only_the_candidate_through_traefiks_ingress_nginx_provider(
    cluster: Cluster, operator: Operator, namespace: str, serving_image: None, model_store: None
) -> None:
    serve_v1(cluster, namespace, AB)
    url = gateway_url()
    assert apply(namespace, md("2.0.0", "iris-v2.joblib", AB)).returncode == 0
    wait_until(
        "the header canary in effect",
        lambda: send(url, BODIES[0], {**AT_HOST, "x-model-variant": "b"}) == (200, "2.0.0"),
        120,
    )
    by_header = shares(send_many(url, [{**AT_HOST, "x-model-variant": "b"}] * 200))
    by_cookie = shares(send_many(url, [{**AT_HOST, "Cookie": "beta=always"}] * 200))
    others = shares(send_many(url, [{**AT_HOST, "x-model-variant": "a"}, AT_HOST] * 100))
    print(
        f"\ningress-nginx A/B via Traefik: header {dict(by_header)}, cookie {dict(by_cookie)}, "
        f"others {dict(others)}"
    )
    assert by_header == Counter({"2.0.0": 200})
    assert by_cookie == Counter({"2.0.0": 200})
    assert others == Counter({"1.0.0": 200})
