"""The operator's default queries (docs/metrics.md) on a real Prometheus scraping real servers.

Stable: the Iris model with its schema and reference, fed Iris rows plus some out-of-range rows.
Candidate: a Python model that fails on a known share of requests. Every documented query must
give the value that traffic implies, so a renamed metric, a wrong label or a broken query fails.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sklearn.datasets import load_iris

from tests.serving.conftest import (
    REPO,
    Server,
    ServerFactory,
    free_port,
    infer_body,
    model_args,
    require_binary,
    schema_args,
    stop,
    wait_for,
)

DOC = REPO / "docs" / "metrics.md"
WINDOW = "15s"

CANDIDATE = """
import numpy as np

class Model:
    classes = ["setosa", "versicolor", "virginica"]

    def predict(self, inputs):
        x = next(iter(inputs.values()))
        if (x[:, 0] >= 90).any():
            raise RuntimeError("candidate bug")
        return {"label": np.array(["versicolor"] * len(x), dtype=object)}
"""


def documented_queries() -> dict[str, str]:
    text = DOC.read_text()
    queries = {}
    for block in re.findall(r"```promql\n(.*?)```", text, re.S):
        first, _, body = block.partition("\n")
        name = first.lstrip("# ").split(":")[0].strip()
        queries[name] = body.strip()
    return queries


def render(query: str, track: str) -> str:
    return query.replace("{{model}}", "iris").replace("{{track}}", track).replace("{{window}}", WINDOW)


@pytest.fixture(scope="module")
def fleet(
    servers: ServerFactory, models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Server]:
    tmp = tmp_path_factory.mktemp("candidate")
    path = tmp / "candidate.py"
    path.write_text(CANDIDATE)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    stable = servers.start(*model_args(models, "iris-v1"), *schema_args(models))
    candidate = servers.start(
        "--model-uri",
        str(path),
        "--sha256",
        sha,
        "--format",
        "python",
        "--name",
        "iris",
        "--version",
        "v2",
        "--track",
        "candidate",
    )
    return {"stable": stable, "candidate": candidate}


@pytest.fixture(scope="module")
def prometheus(fleet: dict[str, Server], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = require_binary("prometheus", "apt-get install prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    # Each server labelled as the pod of its track that Kubernetes discovery would name, so the
    # operator's own queries (which select namespace and pod) find them too (test_segments).
    targets = "".join(
        f"      - targets: ['127.0.0.1:{s.port}']\n"
        f"        labels: {{namespace: ml, pod: iris-{track}-0-{s.port}}}\n"
        for track, s in fleet.items()
    )
    config = tmp / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"scrape_configs:\n  - job_name: rollwise\n    static_configs:\n{targets}"
    )
    port = free_port()
    log = tmp / "prometheus.log"
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: httpx.get(url + "/-/ready", timeout=1).status_code == 200, 60, "Prometheus to be ready", log
    )
    yield url
    stop(proc)


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    r = httpx.get(prometheus + "/api/v1/query", params={"query": promql}, timeout=10)
    body = r.json()
    assert body["status"] == "success", f"{promql}\n{body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def scalar(prometheus: str, promql: str) -> float:
    result = query(prometheus, promql)
    assert len(result) == 1, f"expected one series for\n{promql}\ngot {result}"
    return float(result[0]["value"][1])


@pytest.fixture(scope="module")
def traffic(fleet: dict[str, Server], prometheus: str) -> None:
    """About 6 s of steady traffic: stable 1 in 5 requests out of range, candidate 1 in 4 failing."""
    rows = load_iris().data.tolist()
    wait_for(
        lambda: scalar(prometheus, 'count(up{job="rollwise"} == 1)') == 2,
        30,
        "Prometheus to scrape both servers once before traffic starts",
    )
    stop_at = time.monotonic() + 6

    def send(server: Server, make: Any) -> None:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            i = 0
            while time.monotonic() < stop_at:
                c.post("/v2/models/iris/infer", content=make(i))
                i += 1
                time.sleep(0.01)

    def stable_body(i: int) -> bytes:
        return infer_body([[30.0, 3.0, 1.0, 0.2]] if i % 5 == 4 else [rows[i % len(rows)]])

    def candidate_body(i: int) -> bytes:
        return infer_body([[99.0, 3.0, 1.0, 0.2]] if i % 4 == 3 else [rows[i % len(rows)]], "FP64")

    threads = [
        threading.Thread(target=send, args=(fleet["stable"], stable_body)),
        threading.Thread(target=send, args=(fleet["candidate"], candidate_body)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Wait until Prometheus has scraped everything the servers counted, so rates cover the run.
    for server in fleet.values():
        total = server.sample("rollwise_requests_total")
        wait_for(
            lambda s=server, n=total: (
                scalar(prometheus, f'sum(rollwise_requests_total{{instance="127.0.0.1:{s.port}"}})') == n
            ),
            30,
            "Prometheus to scrape the last requests",
        )


def test_every_documented_query_is_tested() -> None:
    assert set(documented_queries()) == {
        "success_rate",
        "error_rate",
        "fallback_rate",
        "latency_p99_seconds",
        "request_rate",
        "feature_drift_max_psi",
        "prediction_drift_psi",
        "data_quality_problem_rate",
        "class_share",
        "model_loaded",
    }


def test_default_queries_on_a_real_prometheus(prometheus: str, traffic: None) -> None:
    q = documented_queries()

    assert scalar(prometheus, render(q["success_rate"], "stable")) == pytest.approx(1.0)
    assert scalar(prometheus, render(q["error_rate"], "stable")) == pytest.approx(0.0)
    assert scalar(prometheus, render(q["fallback_rate"], "stable")) == pytest.approx(0.0)
    candidate_success = scalar(prometheus, render(q["success_rate"], "candidate"))
    assert 0.6 < candidate_success < 0.9, candidate_success  # 1 in 4 failing
    assert scalar(prometheus, render(q["error_rate"], "candidate")) == pytest.approx(1 - candidate_success)

    p99 = scalar(prometheus, render(q["latency_p99_seconds"], "stable"))
    assert 0 < p99 < 1.0, p99
    for track in ("stable", "candidate"):
        assert scalar(prometheus, render(q["request_rate"], track)) > 5

    # In-distribution Iris rows: feature drift small; the candidate has no schema: no drift series.
    assert 0 <= scalar(prometheus, render(q["feature_drift_max_psi"], "stable")) < 0.25
    assert query(prometheus, render(q["feature_drift_max_psi"], "candidate")) == []
    assert 0 <= scalar(prometheus, render(q["prediction_drift_psi"], "stable")) < 0.25

    # 1 in 5 stable requests had one out-of-range feature.
    assert scalar(prometheus, render(q["data_quality_problem_rate"], "stable")) == pytest.approx(
        0.2, abs=0.07
    )
    assert scalar(prometheus, render(q["data_quality_problem_rate"], "candidate")) == 0

    shares = {
        r["metric"]["class"]: float(r["value"][1])
        for r in query(prometheus, render(q["class_share"], "stable"))
    }
    assert sum(shares.values()) == pytest.approx(1.0)
    assert all(0.2 < shares[c] < 0.45 for c in ("setosa", "versicolor", "virginica")), shares
    candidate_shares = query(prometheus, render(q["class_share"], "candidate"))
    assert {r["metric"]["class"]: float(r["value"][1]) for r in candidate_shares}[
        "versicolor"
    ] == pytest.approx(1.0)

    for track in ("stable", "candidate"):
        assert scalar(prometheus, render(q["model_loaded"], track)) == 1


def test_queries_for_an_unknown_track_return_no_data(prometheus: str, traffic: None) -> None:
    q = documented_queries()
    for name in ("success_rate", "latency_p99_seconds", "feature_drift_max_psi"):
        result = query(prometheus, render(q[name], "nonexistent"))
        assert result == [] or all(r["value"][1] == "NaN" for r in result), (name, result)
