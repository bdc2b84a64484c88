"""`runtime.server` on the real cluster (issue 18): model servers Rollwise did not build, rolled out
with the signals proxy beside them in every pod (`e2e/user_images.py`), judged on the proxy's
metrics through Prometheus like the bundled server's, the client talking only to the Service.

- A user's own JSON model server (no OIP and no Rollwise code in its image): a good release is
  promoted, a release that fails its predictions is rolled back.
- llama-cpp-python's OpenAI server with a tiny GGUF: a release 3× slower to its first token is
  rolled back on timeToFirstTokenP95, a same-speed one is promoted, and streams reach the client
  chunk by chunk through the proxy."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e import images, paths, user_images
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

EXAMPLE = paths.REPO / "examples" / "byo-json-server.yaml"
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.0, 2.9, 4.5, 1.5], [6.7, 3.0, 5.2, 2.3]]
BODIES = [json.dumps({"instances": [r]}).encode() for r in ROWS]


@pytest.fixture(scope="module")
def user_image(cluster: Cluster) -> str:
    """The user's server image, built from e2e/testimages/json-model, in the node by digest."""
    return images.import_into_node(user_images.json_model())


@pytest.fixture
def byo_operator(operator: Operator, tmp_path: Path) -> Iterator[Operator]:
    """The operator with the administrator's guardrails allowing the user's image (by default only
    the bundled serving image may run), alone: the session's operator is paused meanwhile."""
    with operator.paused(tmp_path):
        op = start_operator(
            tmp_path,
            operator.kubeconfig,
            guardrails=json.dumps({"allowedImages": ["rollwise/user-*"]}),
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


# ---- an OpenAI-compatible LLM server ----------------------------------------------------------

STABLE_DELAY_MS = 200
"""Stable's added time to first token. The tiny model answers in milliseconds; 200 ms puts stable
in the 0.1-0.25 s bucket and a 3× release (600 ms) past 0.5 s, so the shift test's boundaries
(stable's above b - 0.1 s against the candidate's above b) can tell them apart."""
CHAT = json.dumps(
    {"messages": [{"role": "user", "content": "roll out"}], "max_tokens": 48, "stream": True}
).encode()


def llm_md(version: str, image: str, delay_ms: int) -> dict[str, Any]:
    return {
        "apiVersion": "rollwise.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "tiny"},
        "spec": {
            "model": {"name": "tiny", "version": version},
            "runtime": {
                "replicas": 1,
                "nodeSelector": {"rollwise.dev/node-kind": "real"},
                "server": {"image": image, "protocol": "openai", "port": 9000},
                "env": [{"name": "FIRST_TOKEN_DELAY_MS", "value": str(delay_ms)}],
            },
            "rollout": {
                "canary": {"steps": [{"setWeight": 50}, {"analysis": {}}]},
                "analysis": {
                    "intervalSeconds": 5,
                    "count": 6,
                    "failureLimit": 0,
                    "inconclusiveLimit": 6,
                    "minSampleCount": 5,
                    "metrics": [
                        {"name": "success-rate", "builtin": "successRate", "threshold": {"min": 99}},
                        {"name": "ttft", "builtin": "timeToFirstTokenP95", "threshold": {"max": 5}},
                    ],
                },
                "progressDeadlineSeconds": 240,
            },
        },
    }


@dataclass
class Streams:
    """Streamed chat completions through the Service from a few threads: each one's HTTP status,
    seconds to its first body byte and to its end, and how many `data:` chunks arrived."""

    url: str
    workers: int = 2
    results: list[tuple[float, int, float, float, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def one(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            first = end = 0.0
            chunks, code = 0, 0
            req = urllib.request.Request(self.url, CHAT, {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    code = resp.status
                    for line in resp:
                        if not first:
                            first = time.monotonic() - started
                        chunks += line.startswith(b"data: ")
                end = time.monotonic() - started
            except urllib.error.HTTPError as err:
                code = err.code
            except (urllib.error.URLError, OSError):
                code = 0
            self.results.append((started, code, first, end, chunks))
            self.stop.wait(0.1)

    @contextlib.contextmanager
    def running(self) -> Iterator[Streams]:
        threads = [threading.Thread(target=self.one, daemon=True) for _ in range(self.workers)]
        for t in threads:
            t.start()
        try:
            yield self
        finally:
            self.stop.set()
            for t in threads:
                t.join(15)

    def failures_since(self, start: float) -> list[tuple[float, int, float, float, int]]:
        return [r for r in self.results if r[0] >= start and r[1] != 200]


@pytest.fixture(scope="module")
def llama_image(cluster: Cluster) -> str:
    return images.import_into_node(user_images.llama())


@pytest.fixture
def streams(
    cluster: Cluster, namespace: str, byo_operator: Operator, llama_image: str, serving_image: str
) -> Iterator[Streams]:
    assert apply(namespace, llm_md("1.0.0", llama_image, STABLE_DELAY_MS)).returncode == 0
    with_status(
        cluster, namespace, lambda: wait_healthy(cluster, namespace, "tiny", timeout=180), name="tiny"
    )
    svc = cluster.core.read_namespaced_service("tiny", namespace)
    url = f"http://{svc.spec.cluster_ip}:{svc.spec.ports[0].port}/v1/chat/completions"
    with Streams(url).running() as load:
        wait_until("steady streams from 1.0.0", lambda: len(load.results) >= 20, 60)
        yield load


def test_llm_streams_arrive_chunk_by_chunk_and_a_3x_slower_first_token_is_rolled_back(
    cluster: Cluster, namespace: str, streams: Streams, llama_image: str
) -> None:
    ok = [r for r in streams.results if r[1] == 200]
    # Token by token: a `data:` chunk per token, the first one well before the end (by hand, through
    # the proxy in Docker: first chunk at 210-295 ms, the end 15-55 ms later, 51 chunks).
    assert ok and all(r[4] >= 10 for r in ok), ok[:3]
    assert sorted(r[3] - r[2] for r in ok)[len(ok) // 2] > 0.01, ok[:3]
    assert apply(namespace, llm_md("2.0.0-slow", llama_image, 3 * STABLE_DELAY_MS)).returncode == 0
    wait_until("the slow candidate to take traffic", lambda: candidate_pods_ready(cluster, namespace), 120)
    took_traffic = time.monotonic()
    with_status(
        cluster,
        namespace,
        lambda: wait_until("rollback", lambda: rolled_back(cluster, namespace, "tiny"), 180),
        name="tiny",
    )
    back = time.monotonic() - took_traffic
    status = get_md(cluster, namespace, "tiny")["status"]
    assert status["stableVersion"] == "1.0.0"
    reason = json.dumps(status["history"][0])
    assert "ttft" in reason or "time to first token" in reason, reason
    first_bytes = sorted(r[2] for r in ok)
    print(
        f"\nLLM: 3x TTFT candidate rolled back {back:.1f}s after its pods took traffic; client first byte "
        f"p50 {first_bytes[len(first_bytes) // 2] * 1000:.0f} ms over {len(ok)} streams before the change"
    )


def test_llm_a_same_speed_release_is_promoted(
    cluster: Cluster, namespace: str, streams: Streams, llama_image: str
) -> None:
    started = time.monotonic()
    assert apply(namespace, llm_md("2.0.0", llama_image, STABLE_DELAY_MS)).returncode == 0
    with_status(
        cluster,
        namespace,
        lambda: wait_until("promotion of 2.0.0", lambda: promoted(cluster, namespace, "2.0.0", "tiny"), 240),
        name="tiny",
    )
    assert streams.failures_since(started) == []
    print(
        f"\nLLM: same-speed 2.0.0 promoted {time.monotonic() - started:.0f}s after the change, "
        "0 failed streams"
    )
