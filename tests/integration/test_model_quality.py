"""The model judged as a model on the real cluster (#15): real serving pods on the real node, a
real Redis joining labels across pods and tracks, real Prometheus, live traffic whose ground-truth
labels the client sends back seconds later, to whichever pod the Service picks.

- A candidate 8 points less accurate (89.3 % against 97.3 % on the Iris rows, same class shares
  within 4 points, every request answered fast) is rolled back by `accuracy` while successRate,
  latencyP99 and predictionDrift all pass; an equally accurate one is promoted after its bake.
- In shadow, a candidate that answers another class on 9.3 % of the rows is rolled back by
  `predictionAgreement`, and `kubectl rollwise diff` shows rows where the answers differ.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from sklearn.datasets import load_iris

from e2e import redis
from e2e.traffic import Load, in_background
from tests.conftest import Cluster, wait_until
from tests.integration.conftest import Operator
from tests.integration.test_cli import plugin
from tests.integration.test_operator import apply, get_md, wait_healthy
from tests.integration.traffic import base_md, model, rolled_back, service_url, with_status

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.prometheus, pytest.mark.slow]

_IRIS = load_iris()
ROWS: list[list[float]] = _IRIS.data.tolist()
LABELS: list[str] = [str(_IRIS.target_names[t]) for t in _IRIS.target]

QUALITY_ANALYSIS: dict[str, Any] = {
    "intervalSeconds": 5,
    "count": 2,
    "minSampleCount": 5,
    "inconclusiveLimit": 2,
    "metrics": [
        {"name": "success-rate", "builtin": "successRate", "threshold": {"min": 99}},
        {"name": "latency", "builtin": "latencyP99", "threshold": {"max": 0.25}},
        {"name": "drift", "builtin": "predictionDrift", "threshold": {"max": 0.2}},
        {"name": "accuracy", "builtin": "accuracy", "threshold": {"min": 80}, "minSamples": 150},
    ],
}


@dataclass
class LabelledLoad:
    """Inference on random Iris rows, each with its own id, and the true labels sent back to the
    Service's `/feedback` `delay` seconds later, in batches, as a labelling pipeline would."""

    url: str
    rate_per_second: float = 40.0
    delay: float = 2.0
    answers: list[tuple[float, int, str]] = field(default_factory=list)
    """(sent at, HTTP status, answering version) per request."""
    feedback: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    """(HTTP status, body) per feedback call."""
    pending: list[tuple[float, str, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    rng: random.Random = field(default_factory=lambda: random.Random(15))

    @property
    def feedback_url(self) -> str:
        return self.url.removesuffix("/infer") + "/feedback"

    def _infer(self) -> None:
        i = self.rng.randrange(len(ROWS))
        rid = uuid.uuid4().hex
        body = {
            "id": rid,
            "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROWS[i]}],
        }
        status, version = _post(self.url, body)
        self.answers.append((time.monotonic(), status, str(version.get("model_version", ""))))
        if status == 200:
            self.pending.append((time.monotonic(), rid, LABELS[i]))

    def _send_labels(self, *, everything: bool = False) -> None:
        ripe = time.monotonic() - (0 if everything else self.delay)
        due = [p for p in self.pending if p[0] <= ripe]
        if not due:
            return
        self.pending = [p for p in self.pending if p[0] > ripe]
        items = [{"id": rid, "label": label} for _, rid, label in due]
        self.feedback.append(_post(self.feedback_url, items))

    def run(self) -> None:
        next_labels = time.monotonic() + 0.5
        while not self.stop.is_set():
            started = time.monotonic()
            self._infer()
            if started >= next_labels:
                self._send_labels()
                next_labels = started + 0.5
            self.stop.wait(max(0.0, 1 / self.rate_per_second - (time.monotonic() - started)))

    def running(self) -> AbstractContextManager[LabelledLoad]:
        return in_background(self)

    def failed(self) -> int:
        return sum(1 for _, status, _ in self.answers if status != 200)


def _post(url: str, body: Any) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, {"error": err.read().decode(errors="replace")[:500]}
    except (urllib.error.URLError, OSError) as err:
        return 0, {"error": str(err)}


@pytest.fixture(scope="session")
def cluster_redis(cluster: Cluster) -> str:
    """A real redis-server pod in rollwise-system, where both tracks' answers wait for labels."""
    return redis.deploy()


def quality_md(
    version: str, artifact: str, fmt: str, redis_url: str, rollout: dict[str, Any]
) -> dict[str, Any]:
    md = base_md()
    md["spec"]["model"] = model(version, artifact, fmt)
    md["spec"]["runtime"] = {
        "replicas": 1,
        "env": [{"name": "ROLLWISE_FEEDBACK_REDIS_URL", "value": redis_url}],
    }
    md["spec"]["rollout"] = {"analysis": QUALITY_ANALYSIS, "progressDeadlineSeconds": 120, **rollout}
    return md


BAKE_SECONDS = 30
CANARY_BAKE = {"canary": {"steps": [{"setWeight": 50}, {"bake": {"durationSeconds": BAKE_SECONDS}}]}}


@contextmanager
def labelled_stable(cluster: Cluster, namespace: str, cluster_redis: str) -> Iterator[LabelledLoad]:
    """iris-v1 Healthy as stable, with labelled live traffic on the `iris` Service."""
    md = quality_md("1.0.0", "iris-v1.joblib", "sklearn", cluster_redis, CANARY_BAKE)
    assert apply(namespace, md).returncode == 0
    wait_healthy(cluster, namespace, "iris", timeout=180)
    with LabelledLoad(service_url(cluster, namespace, "iris")).running() as load:
        wait_until("labels sent back", lambda: len(load.feedback) >= 3, 30)
        yield load


def _metric(md: dict[str, Any], name: str) -> dict[str, Any]:
    history = md["status"].get("history") or []
    analysis = md["status"].get("analysis") or {}
    found = next((m for m in analysis.get("metrics", []) if m["name"] == name), None)
    assert found is not None, f"no {name} in {json.dumps(analysis)[:2000]} (history {history[-1:]})"
    return found


def a_less_accurate_candidate_is_rolled_back_on_labels_and_an_equally_accurate_one_promoted(
    cluster: Cluster, namespace: str, cluster_redis: str
) -> None:
    """Two rollouts on one stable (one setup, for CI time): 2.0.0 answers 8 points less accurately
    and is rolled back on accuracy while every other check passes; then 3.0.0, the stable's own
    artifact, is promoted once its bake is over."""
    with labelled_stable(cluster, namespace, cluster_redis) as load:
        started = time.monotonic()
        md = quality_md("2.0.0", "iris-mislabel.py", "python", cluster_redis, CANARY_BAKE)
        assert apply(namespace, md).returncode == 0
        with_status(
            cluster,
            namespace,
            lambda: wait_until("rolled back", lambda: rolled_back(cluster, namespace), 180),
        )
        took = time.monotonic() - started
        md_now = get_md(cluster, namespace, "iris")
        accuracy = _metric(md_now, "accuracy")
        assert accuracy["failed"] >= 1, accuracy
        assert accuracy["comparison"]["candidate"] < accuracy["comparison"]["stable"] - 4, accuracy
        assert "pp wrong" in accuracy["message"] and accuracy["message"].endswith("worse"), accuracy
        for other in ("success-rate", "latency", "drift"):
            assert _metric(md_now, other)["failed"] == 0, _metric(md_now, other)
        joined = sum(r.get("joined", 0) for status, r in load.feedback if status in (200, 207))
        sent = sum(len(r.get("results", [])) for status, r in load.feedback if status in (200, 207))
        assert sent > 0 and joined >= 0.95 * sent, (joined, sent, load.feedback[-3:])
        print(
            f"\nrolled back on accuracy {took:.0f}s after the change: {accuracy['message']}; "
            f"{joined} of {sent} labels joined, feedback statuses {sorted({s for s, _ in load.feedback})}"
        )

        started = time.monotonic()
        assert (
            apply(
                namespace, quality_md("3.0.0", "iris-v1.joblib", "sklearn", cluster_redis, CANARY_BAKE)
            ).returncode
            == 0
        )

        def promoted() -> bool:
            status = get_md(cluster, namespace, "iris").get("status", {})
            return bool(status.get("stableVersion") == "3.0.0" and status.get("phase") == "Healthy")

        with_status(cluster, namespace, lambda: wait_until("promoted", promoted, 240))
        took = time.monotonic() - started
        assert took >= BAKE_SECONDS  # the bake held it
        last = get_md(cluster, namespace, "iris")["status"]["history"][0]
        assert (last["version"], last["outcome"]) == ("3.0.0", "Promoted"), last
        assert load.failed() == 0
        print(f"promoted {took:.0f}s after the change (bake {BAKE_SECONDS} s)")


SHADOW_ANALYSIS: dict[str, Any] = {
    "intervalSeconds": 15,
    "count": 2,
    "minSampleCount": 5,
    "inconclusiveLimit": 2,
    "metrics": [
        {"name": "success-rate", "builtin": "successRate", "threshold": {"min": 99}},
        {"name": "agreement", "builtin": "predictionAgreement", "threshold": {"min": 97}, "minSamples": 200},
    ],
}


def a_shadow_that_answers_otherwise_is_rolled_back_on_agreement_and_diff_shows_the_rows(
    cluster: Cluster, namespace: str, cluster_redis: str
) -> None:
    """A shadow answering another class than stable on 9.3 % of the Iris rows (every request
    answered, no error) is rolled back by predictionAgreement; while it runs, `kubectl rollwise
    diff` shows rows where the answers differ. Clients only ever see stable's answers."""
    rollout = {"shadow": {"analysis": {}}, "analysis": SHADOW_ANALYSIS, "progressDeadlineSeconds": 120}
    v1 = base_md()
    v1["spec"]["model"] = model("1.0.0", "iris-v1.joblib", "sklearn")
    v1["spec"]["runtime"] = {"replicas": 1}
    v1["spec"]["rollout"] = rollout
    assert apply(namespace, v1).returncode == 0
    wait_healthy(cluster, namespace, "iris", timeout=120)
    bodies = [
        json.dumps({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": r}]}).encode()
        for r in random.Random(3).sample(ROWS, len(ROWS))
    ]
    with Load(service_url(cluster, namespace, "iris"), rate_per_second=40, bodies=bodies).running() as load:
        load.steady()
        started = time.monotonic()
        v2 = {**v1, "spec": {**v1["spec"], "model": model("2.0.0", "iris-mislabel.py", "python")}}
        assert apply(namespace, v2).returncode == 0

        def differing_rows() -> str | None:
            result = plugin(cluster, "diff", "iris", "-n", namespace, timeout=30)
            shown = result.stdout if result.returncode == 0 else ""
            return shown if "2.0.0" in shown and "versicolor" in shown and "virginica" in shown else None

        seen: list[str] = []
        with_status(
            cluster,
            namespace,
            lambda: seen.append(wait_until("kubectl rollwise diff to show rows", differing_rows, 90)),
        )
        with_status(
            cluster,
            namespace,
            lambda: wait_until("rolled back", lambda: rolled_back(cluster, namespace), 120),
        )
        took = time.monotonic() - started
        answered = set(load.versions_since(started))
        failed = [r for r in load.results if r[1] != 200]
    agreement = _metric(get_md(cluster, namespace, "iris"), "agreement")
    assert agreement["failed"] >= 1 and agreement["message"].startswith("agreement "), agreement
    assert 85 < agreement["lastValue"] < 97, agreement
    assert answered == {"1.0.0"}, answered
    assert failed == [], failed[:5]
    print(f"\nshadow rolled back on agreement {took:.0f}s after the change: {agreement['message'][:200]}")
    print("kubectl rollwise diff:\n" + "\n".join(seen[0].splitlines()[:8]))


SEGMENTED_SCHEMA: dict[str, Any] = {
    "features": [
        {"name": "sepal_length", "type": "float", "min": 3.0, "max": 9.0},
        {"name": "sepal_width", "type": "float", "min": 1.5, "max": 5.5},
        {"name": "petal_length", "type": "float", "min": 0.5, "max": 8.0},
        {"name": "petal_width", "type": "float", "min": 0.0, "max": 3.0},
    ],
    "output": {"kind": "classifier", "classes": ["setosa", "versicolor", "virginica"]},
    "segments": [{"feature": "sepal_width", "bins": [3.9]}],
}
BY_SEGMENT_ANALYSIS: dict[str, Any] = {
    **QUALITY_ANALYSIS,
    "metrics": [
        {"name": "success-rate", "builtin": "successRate", "threshold": {"min": 99}},
        {
            "name": "accuracy-by-width",
            "builtin": "accuracy",
            "threshold": {"min": 50},
            "bySegment": "worst",
            "minSamples": 20,
        },
    ],
}


def a_candidate_broken_for_one_segment_is_rolled_back_naming_the_segment(
    cluster: Cluster, namespace: str, cluster_redis: str
) -> None:
    """The rule model against itself broken for rows of sepal width >= 3.9 (4 % of traffic, every
    request answered): `bySegment: worst` rolls it back and the status names the segment."""
    rollout = {
        "canary": {"steps": [{"setWeight": 50}, {"bake": {"durationSeconds": 60}}]},
        "analysis": BY_SEGMENT_ANALYSIS,
        "progressDeadlineSeconds": 120,
    }
    md = quality_md("1.0.0", "iris-rule.py", "python", cluster_redis, rollout)
    md["spec"]["model"]["featureSchema"] = SEGMENTED_SCHEMA
    assert apply(namespace, md).returncode == 0
    wait_healthy(cluster, namespace, "iris", timeout=120)
    with LabelledLoad(service_url(cluster, namespace, "iris")).running() as load:
        wait_until("labels sent back", lambda: len(load.feedback) >= 3, 30)
        started = time.monotonic()
        md["spec"]["model"] = {
            **model("2.0.0", "iris-segment-broken.py", "python"),
            "featureSchema": SEGMENTED_SCHEMA,
        }
        assert apply(namespace, md).returncode == 0
        with_status(
            cluster,
            namespace,
            lambda: wait_until("rolled back", lambda: rolled_back(cluster, namespace), 180),
        )
        took = time.monotonic() - started
        failed = load.failed()
    check = _metric(get_md(cluster, namespace, "iris"), "accuracy-by-width")
    assert check["failed"] >= 1, check
    assert "sepal_width=>=3.9: accuracy" in check["message"], check
    assert "<3.9" not in check["message"].split(": accuracy")[0], check  # only the broken segment is named
    assert failed == 0
    print(f"\nrolled back by segment {took:.0f}s after the change: {check['message'][:300]}")


SCENARIOS: dict[str, Callable[[Cluster, str, str], None]] = {
    "labels": a_less_accurate_candidate_is_rolled_back_on_labels_and_an_equally_accurate_one_promoted,
    "shadow": a_shadow_that_answers_otherwise_is_rolled_back_on_agreement_and_diff_shows_the_rows,
    "segment": a_candidate_broken_for_one_segment_is_rolled_back_naming_the_segment,
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_the_model_is_judged_as_a_model(
    cluster: Cluster,
    operator: Operator,
    namespace: str,
    serving_image: None,
    model_store: None,
    cluster_redis: str,
    scenario: str,
) -> None:
    """Each scenario above, in its own namespace. (Run side by side they were faster, but the
    clients of two namespaces then saw about 0.7 s of failed connections at the same instant, a
    cause in the local cluster not yet found, which would hide a real failed request; so one at a
    time.)"""
    SCENARIOS[scenario](cluster, namespace, cluster_redis)
