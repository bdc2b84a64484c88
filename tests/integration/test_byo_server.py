"""`runtime.server` on the real cluster (issue 18): a user's own JSON model server, no OIP and no
Rollwise code in its image, rolled out with the signals proxy beside it in every pod. The
operator judges the candidate on the proxy's metrics, through Prometheus, like the bundled
server's: a good release is promoted, a release that fails its predictions is rolled back, and
the client never talks to anything but the Service."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e import images, paths
from e2e.traffic import Load
from tests.conftest import Cluster, wait_until
from tests.integration.conftest import Operator, start_operator
from tests.integration.test_operator import apply, get_md, wait_healthy
from tests.integration.traffic import (
    candidate_pods_ready,
    prom_value,
    promoted,
    rolled_back,
    with_status,
)

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.prometheus, pytest.mark.slow]

USER_IMAGE = "rollwise/user-json-model:test"
EXAMPLE = paths.REPO / "examples" / "byo-json-server.yaml"
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.0, 2.9, 4.5, 1.5], [6.7, 3.0, 5.2, 2.3]]
BODIES = [json.dumps({"instances": [r]}).encode() for r in ROWS]


@pytest.fixture(scope="module")
def user_image(cluster: Cluster) -> str:
    """The user's server image, built from e2e/testimages/json-model, in the node by digest."""
    images.ensure_python_base()
    images.docker_build(paths.REPO / "e2e" / "testimages" / "json-model", USER_IMAGE)
    return images.import_into_node(USER_IMAGE)


@pytest.fixture
def byo_operator(operator: Operator, tmp_path: Path) -> Iterator[Operator]:
    """The operator with the administrator's guardrails allowing the user's image (by default only
    the bundled serving image may run), alone: the session's operator is paused meanwhile."""
    with operator.paused(tmp_path):
        op = start_operator(
            tmp_path,
            operator.kubeconfig,
            guardrails=json.dumps({"allowedImages": ["rollwise/user-json-model*"]}),
        )
        try:
            yield op
        finally:
            op.stop()


def json_md(version: str, image: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """examples/byo-json-server.yaml as written, on the image built here, at `version`."""
    md: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    md["spec"]["model"]["version"] = version
    runtime = md["spec"]["runtime"]
    runtime["server"]["image"] = image
    runtime["nodeSelector"] = {"rollwise.dev/node-kind": "real"}
    server_env = {"MODEL_VERSION": version, **(env or {})}
    runtime["env"] = [{"name": k, "value": v} for k, v in sorted(server_env.items())]
    return md


def predict_url(cluster: Cluster, namespace: str) -> str:
    svc = cluster.core.read_namespaced_service("iris", namespace)
    return f"http://{svc.spec.cluster_ip}:{svc.spec.ports[0].port}/predict"


@pytest.fixture
def load(
    cluster: Cluster, namespace: str, byo_operator: Operator, user_image: str, serving_image: str
) -> Iterator[Load]:
    """v1 of the user's server serving as stable, then steady traffic through its Service."""
    assert apply(namespace, json_md("1.0.0", user_image)).returncode == 0
    with_status(cluster, namespace, lambda: wait_healthy(cluster, namespace, "iris", timeout=180))
    pod = cluster.core.list_namespaced_pod(namespace, label_selector="rollwise.dev/track=stable").items[0]
    assert [c.name for c in pod.spec.containers] == ["proxy", "server"]
    with Load(predict_url(cluster, namespace), bodies=list(BODIES)).running() as generator:
        wait_until("steady answers from v1", lambda: len(generator.results) >= 20, 30)
        yield generator


def test_a_users_json_server_is_measured_by_the_proxy_and_a_good_release_promoted(
    cluster: Cluster, namespace: str, load: Load, user_image: str
) -> None:
    started = time.monotonic()
    # The proxy counts the user's answers and their classes in the bundled server's families.
    successes = f'sum(rollwise_requests_total{{namespace="{namespace}",track="stable",outcome="success"}})'
    wait_until(
        "Prometheus to count the stable's answers", lambda: (prom_value(cluster, successes) or 0) >= 5, 60
    )
    answers = f'sum(rollwise_prediction_value_count{{namespace="{namespace}",track="stable"}})'
    wait_until("Prometheus to count the predictions", lambda: (prom_value(cluster, answers) or 0) >= 5, 60)
    assert apply(namespace, json_md("2.0.0", user_image)).returncode == 0
    with_status(
        cluster,
        namespace,
        lambda: wait_until("promotion of 2.0.0", lambda: promoted(cluster, namespace, "2.0.0"), 240),
    )
    wait_until("every answer from 2.0.0", lambda: load.versions_since(time.monotonic() - 3) == {"2.0.0"}, 60)
    assert load.failures_since(started) == []
    history = get_md(cluster, namespace, "iris")["status"]["history"][0]
    assert history["outcome"] == "Promoted"
    print(
        f"\nuser JSON server: 2.0.0 promoted {time.monotonic() - started:.0f}s after the change, 0 failures"
    )


def test_a_users_server_that_fails_its_predictions_is_rolled_back(
    cluster: Cluster, namespace: str, load: Load, user_image: str
) -> None:
    assert apply(namespace, json_md("3.0.0-broken", user_image, {"MODEL_BROKEN": "1"})).returncode == 0
    wait_until("the broken candidate to take traffic", lambda: candidate_pods_ready(cluster, namespace), 120)
    took_traffic = time.monotonic()
    with_status(
        cluster, namespace, lambda: wait_until("rollback", lambda: rolled_back(cluster, namespace), 180)
    )
    back = time.monotonic() - took_traffic
    status = get_md(cluster, namespace, "iris")["status"]
    assert status["stableVersion"] == "1.0.0"
    failed = (
        f'sum(rollwise_requests_total{{namespace="{namespace}",track="candidate",outcome="server_error"}})'
    )
    assert (prom_value(cluster, failed) or 0) > 0  # judged on what the proxy counted
    wait_until(
        "3 s of answers from stable only",
        lambda: (
            (now := time.monotonic())
            and not load.failures_since(now - 3)
            and load.versions_since(now - 3) == {"1.0.0"}
        ),
        60,
    )
    print(f"\nuser JSON server: broken candidate rolled back {back:.1f}s after its pods took traffic")
