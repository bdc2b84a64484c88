"""``rollwise-proxy`` in front of real servers on loopback: the bundled ``rollwise-serve`` as an
OIP upstream (JSON and Triton's binary tensors) and a user's own FastAPI model (http-json).

What is proven: bodies pass unchanged both ways; the proxy's ``/metrics`` has the bundled
server's families and labels, series for series; outcomes, class shares, features, drift,
segments, mirroring and A/B forwarding are recorded as the bundled server records them; the
bounds (body size, upstream timeout, an upstream that is down) answer and count as documented.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from prometheus_client.parser import text_string_to_metric_families

from tests.serving.conftest import (
    SETOSA,
    VERSICOLOR,
    VIRGINICA,
    Server,
    ServerFactory,
    free_port,
    infer_body,
    model_args,
    schema_args,
    wait_for,
)
from tests.serving.proxying import PROXY, Processes, processes

pytestmark = pytest.mark.slow


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    yield from processes(tmp_path)


@pytest.fixture(scope="module")
def upstream(servers: ServerFactory, models: dict[str, Any]) -> Server:
    """The bundled server as the user's OIP server (no schema of its own: the proxy observes)."""
    return servers.start(*model_args(models, "iris-v1"))


def families(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    """Each metric family's type and label names, as a scrape shows them."""
    out = {}
    for family in text_string_to_metric_families(text):
        labels = frozenset(k for s in family.samples for k in s.labels if k not in ("le", "quantile"))
        out[family.name] = (family.type, labels)
    return out


def test_oip_json_passes_through_unchanged_and_is_observed(
    procs: Processes, upstream: Server, models: dict[str, Any]
) -> None:
    proxy = procs.proxy(upstream.url, "oip-rest", *schema_args(models))
    body = infer_body([SETOSA, VIRGINICA], id="same-id")
    direct = upstream.post("/v2/models/iris/infer", content=body)
    through = proxy.post("/v2/models/iris/infer", content=body)
    assert through.status_code == direct.status_code == 200
    assert through.content == direct.content
    assert through.headers["content-type"] == direct.headers["content-type"]
    text = proxy.metrics()
    assert proxy.sample("rollwise_requests_total", outcome="success") == 1
    assert proxy.sample("rollwise_request_duration_seconds_count") == 1
    assert proxy.sample("rollwise_prediction_value_count", **{"class": "setosa"}) == 1
    assert proxy.sample("rollwise_prediction_value_count", **{"class": "virginica"}) == 1
    for feature in ("sepal_length", "sepal_width", "petal_length", "petal_width"):
        assert proxy.sample("rollwise_feature_value_count", feature=feature) == 2
    assert 'rollwise_feature_psi{feature="petal_width"' in text
    assert proxy.sample("rollwise_model_loaded", role="primary") == 1  # readiness asked the upstream
    # metadata and health pass through, uncounted
    assert proxy.get("/v2/models/iris").json() == upstream.get("/v2/models/iris").json()
    assert proxy.get("/v2/health/ready").status_code == 200
    assert proxy.sample("rollwise_requests_total") == 1


def test_the_proxy_exports_the_bundled_servers_families_and_labels(
    procs: Processes, servers: ServerFactory, upstream: Server, models: dict[str, Any]
) -> None:
    """The contract: a server behind the proxy is read by the same queries as the bundled one."""
    bundled = servers.start(*model_args(models, "iris-v1"), *schema_args(models))
    proxy = procs.proxy(upstream.url, "oip-rest", *schema_args(models))
    body = infer_body([SETOSA])
    assert bundled.post("/v2/models/iris/infer", content=body).status_code == 200
    assert proxy.post("/v2/models/iris/infer", content=body).status_code == 200
    assert families(proxy.metrics()) == families(bundled.metrics())
    for name in (
        "rollwise_requests_total",
        "rollwise_prediction_value_count",
        "rollwise_feature_value_count",
    ):
        assert proxy.sample(name) == bundled.sample(name), name


def test_tritons_binary_client_passes_through_and_its_classes_are_counted(
    procs: Processes, upstream: Server, models: dict[str, Any]
) -> None:
    proxy = procs.proxy(upstream.url, "oip-rest", *schema_args(models))
    rows = np.array([SETOSA, VERSICOLOR, VIRGINICA, SETOSA], dtype=np.float32)
    tensor = triton.InferInput("input-0", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=True)
    wanted = [triton.InferRequestedOutput(n, binary_data=True) for n in ("label", "probabilities")]
    c = triton.InferenceServerClient(f"127.0.0.1:{proxy.port}")
    try:
        result = c.infer("iris", [tensor], outputs=wanted, request_id="bin-1")
    finally:
        c.close()
    assert result.get_response()["id"] == "bin-1"
    labels = [v.decode() for v in result.as_numpy("label").ravel()]
    assert labels == ["setosa", "versicolor", "virginica", "setosa"]
    assert result.as_numpy("probabilities").shape == (4, 3)
    assert proxy.sample("rollwise_prediction_value_count", **{"class": "setosa"}) == 2
    assert proxy.sample("rollwise_prediction_value_count", **{"class": "versicolor"}) == 1
    assert proxy.sample("rollwise_feature_value_count", feature="petal_length") == 4


def test_grpc_calls_pass_through_and_model_infer_is_observed(
    procs: Processes, servers: ServerFactory, models: dict[str, Any]
) -> None:
    import tritonclient.grpc as triton_grpc  # noqa: PLC0415
    from tritonclient.utils import InferenceServerException  # noqa: PLC0415

    grpc_up = free_port()
    upstream = servers.start(*model_args(models, "iris-v1"), "--grpc-port", str(grpc_up))
    grpc_port = free_port()
    proxy = procs.proxy(
        upstream.url,
        "oip-rest",
        *schema_args(models),
        "--grpc-port",
        str(grpc_port),
        "--grpc-upstream",
        f"127.0.0.1:{grpc_up}",
    )
    rows = np.array([SETOSA, VIRGINICA, VIRGINICA], dtype=np.float32)
    tensor = triton_grpc.InferInput("input-0", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)  # raw_input_contents
    c = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    try:
        assert c.is_server_live() and c.is_model_ready("iris")
        result = c.infer("iris", [tensor], request_id="g-1")
        assert [v.decode() for v in result.as_numpy("label").ravel()] == ["setosa", "virginica", "virginica"]
        assert result.get_response().id == "g-1"
        with pytest.raises(InferenceServerException, match="shape"):
            c.infer(
                "iris",
                [
                    triton_grpc.InferInput("input-0", [1, 2], "FP32").set_data_from_numpy(
                        np.array([[1.0, 2.0]], dtype=np.float32)
                    )
                ],
            )
        with pytest.raises(InferenceServerException):
            c.infer("other", [tensor])
    finally:
        c.close()
    assert proxy.sample("rollwise_requests_total", outcome="success") == 1
    assert proxy.sample("rollwise_requests_total", outcome="client_error") == 1
    assert proxy.sample("rollwise_requests_total") == 2  # another model's call is not counted
    assert proxy.sample("rollwise_prediction_value_count", **{"class": "virginica"}) == 2
    assert proxy.sample("rollwise_feature_value_count", feature="sepal_width") == 3


def test_upstream_errors_become_the_bundled_servers_outcomes(
    procs: Processes, upstream: Server, models: dict[str, Any]
) -> None:
    proxy = procs.proxy(upstream.url, "oip-rest", *schema_args(models), "--max-body-bytes", "4096")
    bad_shape = infer_body([[1.0, 2.0]])
    refused = proxy.post("/v2/models/iris/infer", content=bad_shape)
    assert refused.status_code == upstream.post("/v2/models/iris/infer", content=bad_shape).status_code == 400
    assert proxy.sample("rollwise_requests_total", outcome="client_error") == 1
    # a feature outside the schema: counted as the bundled server counts it, the upstream judges
    out_of_range = proxy.post("/v2/models/iris/infer", content=infer_body([[5.1, 3.5, 1.4, 9.5]]))
    assert out_of_range.status_code == 200
    assert proxy.sample("rollwise_data_quality_total", feature="petal_width", problem="out_of_range") == 1
    assert proxy.sample("rollwise_feature_value_count", feature="petal_width") == 0
    # another model's route: not this model's request, not counted
    assert proxy.post("/v2/models/other/infer", content=infer_body([SETOSA])).status_code == 404
    too_big = proxy.post("/v2/models/iris/infer", content=b"x" * 5000)
    assert too_big.status_code == 413
    # the bundled server's bounded HTTP/1.1: too many headers never reach the app
    many = {f"x-h{i}": "v" for i in range(120)}
    assert proxy.post("/v2/models/iris/infer", content=infer_body([SETOSA]), headers=many).status_code == 431
    assert proxy.sample("rollwise_requests_total", outcome="client_error") == 2
    assert proxy.sample("rollwise_requests_total", outcome="success") == 1


def test_an_upstream_that_is_down_is_a_server_error_and_not_ready(procs: Processes) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    port = free_port()
    argv = [str(PROXY), "--host", "127.0.0.1", "--port", str(port), "--upstream", closed]
    argv += ["--protocol", "oip-rest", "--name", "iris", "--version", "v1"]
    proxy = procs.start(argv, port, "/rollwise/live")
    ready = proxy.get("/rollwise/ready")
    assert ready.status_code == 503
    assert "upstream GET /v2/health/ready failed" in ready.json()["reason"]
    answer = proxy.post("/v2/models/iris/infer", content=infer_body([SETOSA]))
    assert answer.status_code == 502
    assert "could not be reached" in answer.json()["error"]
    assert proxy.sample("rollwise_requests_total", outcome="server_error") == 1
    assert proxy.sample("rollwise_model_loaded", role="primary") == 0


def test_mirroring_compares_the_shadows_answers(
    procs: Processes, servers: ServerFactory, upstream: Server, models: dict[str, Any]
) -> None:
    shadow = servers.start(*model_args(models, "iris-v2", version="v2"))
    proxy = procs.proxy(upstream.url, "oip-rest", *schema_args(models), "--mirror-url", shadow.url)
    for row in (SETOSA, VERSICOLOR, VIRGINICA):
        assert proxy.post("/v2/models/iris/infer", content=infer_body([row])).status_code == 200
    wait_for(lambda: proxy.sample("rollwise_mirror_total", result="sent") == 3, 10, "three copies mirrored")
    wait_for(
        lambda: proxy.sample("rollwise_shadow_compared_total", peer_version="v2") == 3,
        10,
        "three rows compared",
    )
    assert shadow.sample("rollwise_requests_total", outcome="success") == 3


def test_ab_forwarding_sends_matching_requests_to_the_peer(
    procs: Processes, servers: ServerFactory, upstream: Server, models: dict[str, Any]
) -> None:
    peer = servers.start(*model_args(models, "iris-v2", version="v2"))
    match = json.dumps([{"header": {"name": "x-variant", "value": "b"}}])
    proxy = procs.proxy(upstream.url, "oip-rest", "--forward-match", match, "--forward-url", peer.url)
    body = infer_body([SETOSA])
    assert proxy.post("/v2/models/iris/infer", content=body).json()["model_version"] == "v1"
    forwarded = proxy.post("/v2/models/iris/infer", content=body, headers={"x-variant": "b"})
    assert forwarded.json()["model_version"] == "v2"
    assert proxy.sample("rollwise_forward_total", result="sent") == 1
    assert proxy.sample("rollwise_requests_total") == 1  # the forwarded one is the peer's to count


def test_labels_are_joined_to_the_answers_the_proxy_saw(
    procs: Processes, upstream: Server, models: dict[str, Any]
) -> None:
    """Feedback by the OIP answer's id, into the bundled server's label metrics."""
    proxy = procs.proxy(upstream.url, "oip-rest", *schema_args(models))
    assert proxy.post("/v2/models/iris/infer", content=infer_body([SETOSA], id="fb-1")).status_code == 200
    assert proxy.post("/v2/models/iris/infer", content=infer_body([VIRGINICA], id="fb-2")).status_code == 200
    mirrored = {"x-rollwise-hop": "mirror"}  # a shadow's copy: answered, never kept
    assert proxy.post("/v2/models/iris/infer", content=infer_body([SETOSA], id="fb-3"), headers=mirrored)
    labels = [{"id": "fb-1", "label": "setosa"}, {"id": "fb-2", "label": "versicolor"}]
    answer = proxy.post("/v2/models/iris/feedback", content=orjson.dumps(labels))
    assert answer.status_code == 200, answer.text
    assert proxy.post("/v2/models/iris/feedback", content=orjson.dumps({"id": "fb-3", "label": "setosa"}))
    assert proxy.sample("rollwise_feedback_total", result="joined") == 2
    assert proxy.sample("rollwise_feedback_total", result="unmatched") == 1
    assert proxy.sample("rollwise_labelled_total") == 2
    assert proxy.sample("rollwise_label_correct_total") == 1
    assert proxy.sample("rollwise_requests_total", outcome="success") == 3  # feedback is not inference


USER_APP = """
    import asyncio
    from fastapi import FastAPI, Request

    app = FastAPI()

    @app.get("/")
    async def health() -> dict:
        return {"ok": True}

    @app.post("/score")
    async def score(request: Request) -> dict:
        doc = await request.json()
        rows = doc["data"]["rows"]
        return {"result": {"labels": [label(r) for r in rows]}, "served_by": "user-app"}

    def label(r: dict) -> str:
        if r["petal_length"] < 2.5:
            return "setosa"
        return "versicolor" if r["petal_width"] < 1.75 else "virginica"

    @app.post("/slow")
    async def slow() -> dict:
        await asyncio.sleep(3)
        return {"result": {"labels": ["setosa"]}}
"""


def named(row: list[float]) -> dict[str, float]:
    return dict(zip(("sepal_length", "sepal_width", "petal_length", "petal_width"), row, strict=True))


def test_a_users_fastapi_model_over_http_json(procs: Processes, models: dict[str, Any]) -> None:
    app = procs.user_app(USER_APP)
    schema = str(models["dir"] / models["feature_schema"])
    proxy = procs.proxy(
        app.url,
        "http-json",
        "--prediction-path",
        "$.result.labels",
        "--features-path",
        "$.data.rows",
        "--feature-schema",
        schema,
        "--upstream-timeout-seconds",
        "1",
    )
    body = orjson.dumps({"data": {"rows": [named(SETOSA), named(VIRGINICA), named(VIRGINICA)]}})
    answer = proxy.post("/score", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 200
    assert (
        answer.content
        == app.post("/score", content=body, headers={"content-type": "application/json"}).content
    )
    assert answer.json()["result"]["labels"] == ["setosa", "virginica", "virginica"]
    assert proxy.sample("rollwise_requests_total", outcome="success") == 1
    assert proxy.sample("rollwise_prediction_value_count", **{"class": "virginica"}) == 2
    assert proxy.sample("rollwise_feature_value_count", feature="sepal_width") == 3
    # a user server that takes too long: 504, the server's failure
    slow = proxy.post("/slow", content=b"{}")
    assert slow.status_code == 504
    assert proxy.sample("rollwise_requests_total", outcome="server_error") == 1
    # HEAD: the answer ends with its headers (its length names a body that never comes)
    head = httpx.head(proxy.url + "/", timeout=5)
    assert head.status_code == httpx.head(app.url + "/", timeout=5).status_code
    assert proxy.get("/").json() == {"ok": True}
    # a refused row (unknown feature) is counted as a data-quality problem, the request goes on
    odd = orjson.dumps({"data": {"rows": [{**named(SETOSA), "colour": 3}]}})
    assert proxy.post("/score", content=odd).status_code == 200
    assert proxy.sample("rollwise_data_quality_total", problem="rejected") >= 1


def test_connections_the_upstream_closed_while_idle_are_not_reused(procs: Processes) -> None:
    """uvicorn closes a keep-alive connection idle for --timeout-keep-alive: the next request
    goes on a new connection, at once (not after the upstream timeout)."""
    app = procs.user_app(USER_APP, "--timeout-keep-alive", "1")
    proxy = procs.proxy(
        app.url, "http-json", "--prediction-path", "$.result.labels", "--upstream-timeout-seconds", "5"
    )
    body = orjson.dumps({"data": {"rows": [named(SETOSA)] * 2}})
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        sent = [client.post("/score", content=body) for _ in range(8)]
        time.sleep(2)  # the upstream closes the proxy's idle connections
        start = time.monotonic()
        again = [client.post("/score", content=body) for _ in range(8)]
        took = time.monotonic() - start
    assert [r.status_code for r in sent + again] == [200] * 16
    assert took < 2, took
    assert proxy.sample("rollwise_requests_total", outcome="success") == 16


def test_bad_flags_exit_2_naming_each_problem() -> None:
    run = subprocess.run(
        [str(PROXY), "--protocol", "http-json", "--name", "m", "--version", "v1", "--upstream", "nope"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert run.returncode == 2
    assert "--upstream (env ROLLWISE_UPSTREAM): 'nope' is not a URL" in run.stderr
    assert "--protocol http-json needs --prediction-path" in run.stderr


def test_docs_metrics_lists_the_new_metrics() -> None:
    """docs/metrics.md documents each name the proxy adds to the contract."""
    from rollwise_contract import metrics  # noqa: PLC0415

    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    for name in (
        metrics.LLM_TIME_TO_FIRST_TOKEN,
        metrics.LLM_INTER_TOKEN_LATENCY,
        metrics.LLM_TIME_PER_OUTPUT_TOKEN,
        metrics.LLM_OUTPUT_TOKENS_PER_SECOND,
    ):
        assert f"`{name}`" in doc
    for name in (metrics.LLM_TOKENS, metrics.LLM_FINISH):
        assert f"`{name}_total`" in doc
