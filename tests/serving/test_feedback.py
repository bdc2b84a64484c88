"""Ground-truth labels against real servers: ids on every answer, labels joined to what was
predicted, across replicas through a real Redis, and the store's memory bound."""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from tests.serving.conftest import (
    SETOSA,
    VERSICOLOR,
    VIRGINICA,
    Redis,
    Server,
    ServerFactory,
    infer_body,
    model_args,
    schema_args,
    stop,
    wait_for,
)

INFER = "/v2/models/iris/infer"
FEEDBACK = "/v2/models/iris/feedback"
CLASSES = ["setosa", "versicolor", "virginica"]


@pytest.fixture(scope="module")
def iris(servers: ServerFactory, models: dict[str, Any]) -> Server:
    return servers.start(*model_args(models, "iris-v1"), *schema_args(models), "--max-body-bytes", "65536")


def answer(server: Server, rows: list[list[float]], **extra: Any) -> dict[str, Any]:
    r = server.post(INFER, content=infer_body(rows, **extra))
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    assert r.headers["x-rollwise-prediction-id"] == doc["id"]
    return doc


def outputs(doc: dict[str, Any]) -> dict[str, Any]:
    return {o["name"]: o["data"] for o in doc["outputs"]}


def results(server: Server) -> dict[str, float]:
    return {r: server.sample("rollwise_feedback_total", result=r) for r in FEEDBACK_RESULTS}


FEEDBACK_RESULTS = ("joined", "unmatched", "duplicate", "invalid")


def send(server: Server, items: Any) -> Any:
    return server.post(FEEDBACK, content=json.dumps(items).encode())


# ---- ids -------------------------------------------------------------------------------------------


def test_every_answer_carries_an_id_in_its_json_and_header(iris: Server) -> None:
    first, second = answer(iris, [SETOSA]), answer(iris, [SETOSA])
    assert re.fullmatch(r"[0-9a-f]{16}", first["id"]) and first["id"] != second["id"]
    assert answer(iris, [SETOSA], id="order-17")["id"] == "order-17"
    named = iris.post("/v2/models/iris/predict", json={"instances": [dict(zip(NAMES, SETOSA, strict=True))]})
    assert named.status_code == 200, named.text
    assert re.fullmatch(r"[0-9a-f]{16}", named.json()["id"])
    assert named.headers["x-rollwise-prediction-id"] == named.json()["id"]
    given = iris.post(
        "/v2/models/iris/predict", json={"id": "p-1", "instances": [dict(zip(NAMES, SETOSA, strict=True))]}
    )
    assert given.json()["id"] == given.headers["x-rollwise-prediction-id"] == "p-1"
    # OIP lets an id be any string: one that cannot be a header is echoed, not kept.
    spaced = iris.post(INFER, content=infer_body([SETOSA], id="two words"))
    assert spaced.json()["id"] == "two words" and "x-rollwise-prediction-id" not in spaced.headers
    assert send(iris, {"id": "two words", "label": "setosa"}).status_code == 404


NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


# ---- the join --------------------------------------------------------------------------------------


def test_labels_joined_to_a_classifier_give_exact_accuracy_and_log_loss(iris: Server) -> None:
    doc = answer(iris, [SETOSA, VERSICOLOR, VIRGINICA])
    predicted = outputs(doc)["label"]
    probabilities = np.asarray(outputs(doc)["probabilities"]).reshape(3, 3)
    truth = ["setosa", "virginica", "virginica"]  # row 1 is wrong on purpose
    before = {n: iris.sample(n, version="v1", track="stable") for n in QUALITY}
    r = send(iris, [{"id": doc["id"], "row": i, "label": t} for i, t in enumerate(truth)])
    assert r.status_code == 200, r.text
    assert r.json()["joined"] == 3
    # what the server kept: float32 probabilities, clipped at 1e-15
    p = [max(float(np.float32(probabilities[i, CLASSES.index(t)])), 1e-15) for i, t in enumerate(truth)]
    losses = [-math.log(x) for x in p]
    after = {n: iris.sample(n, version="v1", track="stable") for n in QUALITY}
    delta = {n: after[n] - before[n] for n in QUALITY}
    assert delta["rollwise_labelled_total"] == 3
    assert (
        delta["rollwise_label_correct_total"]
        == sum(a == b for a, b in zip(predicted, truth, strict=True))
        == 2
    )
    assert delta["rollwise_label_with_probabilities_total"] == 3
    assert delta["rollwise_label_log_loss_total"] == pytest.approx(sum(losses), rel=1e-12)
    assert delta["rollwise_label_log_loss_squared_total"] == pytest.approx(
        sum(x * x for x in losses), rel=1e-12
    )
    assert delta["rollwise_label_abs_error_total"] == 0


QUALITY = (
    "rollwise_labelled_total",
    "rollwise_label_correct_total",
    "rollwise_label_abs_error_total",
    "rollwise_label_squared_error_total",
    "rollwise_label_log_loss_total",
    "rollwise_label_log_loss_squared_total",
    "rollwise_label_with_probabilities_total",
)

REGRESSOR = '''
import numpy as np


class Model:
    """y = 2 * x0 + 0.5: a regressor whose answers the test can predict."""

    outputs = [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]

    def predict(self, inputs):
        x = np.asarray(next(iter(inputs.values())), dtype=np.float64)
        return {"prediction": 2 * x[:, 0] + 0.5}
'''


def regressor_args(tmp: Path) -> list[str]:
    path = tmp / "regressor.py"
    path.write_text(REGRESSOR)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return [
        "--model-uri",
        str(path),
        "--sha256",
        digest,
        "--format",
        "python",
        "--name",
        "iris",
        "--version",
        "r1",
    ]


def test_labels_joined_to_a_regressor_sum_absolute_and_squared_errors(
    fresh_servers: ServerFactory, tmp_path: Path
) -> None:
    s = fresh_servers.start(*regressor_args(tmp_path))
    doc = answer(s, [[1.0, 0, 0, 0], [2.5, 0, 0, 0]])
    assert outputs(doc)["prediction"] == [2.5, 5.5]
    r = send(s, [{"id": doc["id"], "row": 0, "value": 3.0}, {"id": doc["id"], "row": 1, "value": 4}])
    assert r.status_code == 200, r.text
    assert s.sample("rollwise_labelled_total", version="r1") == 2
    assert s.sample("rollwise_label_abs_error_total") == pytest.approx(0.5 + 1.5)
    assert s.sample("rollwise_label_squared_error_total") == pytest.approx(0.25 + 2.25)
    assert s.sample("rollwise_label_correct_total") == 0
    other = answer(s, [[1.0, 0, 0, 0]])
    bad = [
        (
            {"id": other["id"], "value": "3"},
            "item.value: '3' is not a finite number; send the true value as a number",
        ),
        (
            {"id": other["id"], "value": True},
            "item.value: True is not a finite number; send the true value as a number",
        ),
        (
            {"id": other["id"], "label": "setosa"},
            f'item.label: the prediction {other["id"]!r} is a regressor\'s; send "value": <number>',
        ),
    ]
    for item, error in bad:
        r = send(s, item)
        assert (r.status_code, r.json()["error"]) == (422, error)
    # JSON has no infinity: an overflowing literal is refused with the whole body
    r = s.post(FEEDBACK, content=b'{"id": "%s", "value": 1e999}' % other["id"].encode())
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    assert results(s) == {"joined": 2, "unmatched": 0, "duplicate": 0, "invalid": 4}


def test_labels_reach_the_replica_of_either_track_through_redis(
    fresh_servers: ServerFactory, models: dict[str, Any], redis_server: Redis
) -> None:
    """A label sent to the candidate for a stable answer is counted under stable's labels, and the
    other way round; a label sent again to the other replica is a duplicate."""
    shared = ["--feedback-redis-url", redis_server.url]
    stable = fresh_servers.start(*model_args(models, "iris-v1", version="v1"), *shared)
    candidate = fresh_servers.start(
        *model_args(models, "iris-v2", version="v2"), "--track", "candidate", *shared
    )
    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    by_stable = answer(stable, [VIRGINICA])
    by_candidate = answer(candidate, [SETOSA])
    for doc in (by_stable, by_candidate):
        wait_for(
            lambda d=doc: client.exists(f"rollwise:default:iris:feedback:{d['id']}"), 5, "the write to Redis"
        )
    assert client.ttl(f"rollwise:default:iris:feedback:{by_stable['id']}") > 3500

    assert send(candidate, {"id": by_stable["id"], "label": "virginica"}).status_code == 200
    assert send(stable, {"id": by_candidate["id"], "label": "versicolor"}).status_code == 200
    assert candidate.sample("rollwise_labelled_total", version="v1", track="stable") == 1
    assert candidate.sample("rollwise_label_correct_total", version="v1", track="stable") == 1
    assert candidate.sample("rollwise_label_with_probabilities_total", version="v1", track="stable") == 1
    assert candidate.sample("rollwise_labelled_total", version="v2", track="candidate") == 0
    assert stable.sample("rollwise_labelled_total", version="v2", track="candidate") == 1
    assert stable.sample("rollwise_label_correct_total", version="v2", track="candidate") == 0
    assert stable.sample("rollwise_labelled_total", version="v1", track="stable") == 0
    # feedback is counted where it arrives
    assert candidate.sample("rollwise_feedback_total", result="joined", track="candidate") == 1

    again = send(stable, {"id": by_stable["id"], "label": "setosa"})
    assert again.status_code == 409, again.text
    assert stable.sample("rollwise_feedback_total", result="duplicate") == 1
    assert stable.sample("rollwise_labelled_total", version="v1") == 0


def test_an_ab_answer_forwarded_to_the_candidate_keeps_its_id_and_joins_at_the_front(
    fresh_servers: ServerFactory, models: dict[str, Any], redis_server: Redis
) -> None:
    shared = ["--feedback-redis-url", redis_server.url]
    peer = fresh_servers.start(*model_args(models, "iris-v2", version="v2"), "--track", "candidate", *shared)
    matches = json.dumps([{"header": {"name": "x-variant", "value": "b"}}])
    front = fresh_servers.start(
        *model_args(models, "iris-v1"), "--forward-match", matches, "--forward-url", peer.url, *shared
    )
    r = front.post(INFER, content=infer_body([VIRGINICA]), headers={"x-variant": "b"})
    assert r.json()["model_version"] == "v2"
    assert r.headers["x-rollwise-prediction-id"] == r.json()["id"]
    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    wait_for(
        lambda: client.exists(f"rollwise:default:iris:feedback:{r.json()['id']}"), 5, "the write to Redis"
    )
    assert send(front, {"id": r.json()["id"], "label": "virginica"}).status_code == 200
    assert front.sample("rollwise_label_correct_total", version="v2", track="candidate") == 1


def test_two_workers_join_through_redis_and_export_one_view(
    fresh_servers: ServerFactory, models: dict[str, Any], redis_server: Redis
) -> None:
    """Each worker keeps its own answers; Redis lets whichever worker takes a label join it, and
    the counters of both workers add up in /metrics (prometheus multiprocess mode)."""
    s = fresh_servers.start(*model_args(models, "iris-v1"), "--redis-url", redis_server.url, "--workers", "2")
    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    docs = [answer(s, [[5.0 + i / 20, 3.0, 1.5 + i / 10, 0.2]]) for i in range(30)]
    for doc in docs:
        wait_for(
            lambda d=doc: client.exists(f"rollwise:default:iris:feedback:{d['id']}"), 5, "the write to Redis"
        )
    r = send(s, [{"id": d["id"], "label": outputs(d)["label"][0]} for d in docs])
    assert r.status_code == 200, r.text
    assert s.sample("rollwise_labelled_total") == 30
    assert s.sample("rollwise_label_correct_total") == 30
    assert s.sample("rollwise_feedback_total", result="joined") == 30


def test_labels_after_the_retention_are_unmatched(
    fresh_servers: ServerFactory, models: dict[str, Any], redis_server: Redis
) -> None:
    s = fresh_servers.start(
        *model_args(models, "iris-v1"), "--redis-url", redis_server.url, "--feedback-retention-seconds", "1"
    )
    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    late, early = answer(s, [SETOSA]), answer(s, [VERSICOLOR])
    wait_for(lambda: client.exists(f"rollwise:default:iris:feedback:{late['id']}"), 5, "the write to Redis")
    assert send(s, {"id": early["id"], "label": "versicolor"}).status_code == 200
    time.sleep(1.3)
    r = send(s, {"id": late["id"], "label": "setosa"})
    assert r.status_code == 404, r.text
    assert r.json()["error"] == (
        f"item.id: no prediction {late['id']!r} is kept: unknown, older than "
        "--feedback-retention-seconds (1) or evicted (--feedback-max-predictions 1000000)"
    )
    assert not client.exists(f"rollwise:default:iris:feedback:{late['id']}")
    assert results(s) == {"joined": 1, "unmatched": 1, "duplicate": 0, "invalid": 0}
    assert s.sample("rollwise_labelled_total") == 1


# ---- refusals ----------------------------------------------------------------------------------------


def bad_items(batch: str, single: str) -> list[tuple[str, Any, int, str]]:
    """(case, item, status, error) for each way an item can be wrong; ids from real answers."""
    return [
        (
            "no id",
            {"label": "setosa"},
            422,
            'item.id: missing or not a string; send the "id" of the answer '
            "(or its x-rollwise-prediction-id header)",
        ),
        (
            "a misspelt key",
            {"id": single, "lable": "setosa"},
            422,
            'item: unknown key(s) [\'lable\']; an item has "id", "label" or "value", and "row"',
        ),
        (
            "label and value",
            {"id": single, "label": "setosa", "value": 1},
            422,
            'item: give exactly one of "label" (a classifier\'s class) or "value" (a regressor\'s number)',
        ),
        (
            "a label of the wrong type",
            {"id": single, "label": 1.5},
            422,
            "item.label: 1.5 is not a class; send the class as a string (or an integer)",
        ),
        (
            "a label that is no class",
            {"id": single, "label": "daisy"},
            422,
            "item.label: 'daisy' is not one of the model's classes "
            "['setosa', 'versicolor', 'virginica']; send one of them",
        ),
        (
            "a value for a classifier",
            {"id": single, "value": 2.0},
            422,
            f'item.value: the prediction {single!r} is a classifier\'s; send "label": <class>',
        ),
        (
            "a negative row",
            {"id": single, "row": -1, "label": "setosa"},
            422,
            "item.row: -1 is not a row index; use an integer from 0",
        ),
        (
            "a row past the batch",
            {"id": batch, "row": 3, "label": "setosa"},
            422,
            f"item.row: 3 is out of range; the prediction {batch!r} has 3 row(s), 0 to 2",
        ),
        (
            "no row for a batch",
            {"id": batch, "label": "setosa"},
            422,
            f'item.row: missing; the prediction {batch!r} has 3 rows: name one with "row": 0 to 2',
        ),
        (
            "an unknown id",
            {"id": "never-answered", "label": "setosa"},
            404,
            "item.id: no prediction 'never-answered' is kept: unknown, older than "
            "--feedback-retention-seconds (3600) or evicted (--feedback-max-predictions 1000000); "
            "this server shares no predictions with other replicas (set --feedback-redis-url)",
        ),
        (
            "a list item that is no object",
            ["not an object"],
            207,
            '[0]: must be an object {"id": ..., "label" | "value": ..., "row": ...}',
        ),
    ]


def test_bad_feedback_is_refused_naming_the_item_and_the_problem(iris: Server) -> None:
    batch = answer(iris, [SETOSA, VERSICOLOR, VIRGINICA])["id"]
    single = answer(iris, [SETOSA])["id"]
    for case, item, status, error in bad_items(batch, single):
        before = results(iris)
        r = send(iris, item)
        assert r.status_code == status, (case, r.text)
        assert r.json()["results"][0]["error"] == error, case
        after = results(iris)
        kind = "unmatched" if status == 404 else "invalid"
        assert {k: after[k] - before[k] for k in after} == {k: float(k == kind) for k in after}, case
    # a label already given: the first one stands
    assert send(iris, {"id": single, "label": "setosa"}).status_code == 200
    again = send(iris, {"id": single, "label": "virginica"})
    assert (again.status_code, again.json()["error"]) == (
        409,
        f"item: the prediction {single!r} row 0 already has a label; the first one stands",
    )


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        pytest.param(b"{nope", 400, "the body is not valid JSON", id="not JSON"),
        pytest.param(
            b'"setosa"',
            400,
            'the body must be an object {"id": ..., "label" | "value": ..., "row": ...} '
            "or a non-empty list of them",
            id="a bare string",
        ),
        pytest.param(b"[]", 400, "the body must be an object", id="an empty list"),
        pytest.param(
            json.dumps([{"id": "x", "label": "setosa"}] * 1001).encode(),
            400,
            "1001 items is over the 1000 a call takes; send them in several calls",
            id="too many items",
        ),
        pytest.param(
            b"[" + b",".join([b'{"id": "x", "label": "setosa"}'] * 3000) + b"]",
            413,
            "request body of 93001 bytes is over the 65536-byte limit (--max-body-bytes)",
            id="too large",
        ),
    ],
)
def test_an_unreadable_body_is_refused_whole_and_counted_once(
    iris: Server, body: bytes, status: int, error: str
) -> None:
    before = results(iris)["invalid"]
    r = iris.post(FEEDBACK, content=body)
    assert r.status_code == status
    assert r.json()["error"].startswith(error)
    assert results(iris)["invalid"] == before + 1


def test_a_call_with_some_bad_items_answers_207_with_each_items_result(iris: Server) -> None:
    doc = answer(iris, [SETOSA, VIRGINICA])
    r = send(
        iris,
        [
            {"id": doc["id"], "row": 0, "label": "setosa"},
            {"id": doc["id"], "row": 0, "label": "setosa"},
            {"id": doc["id"], "row": 1, "label": "daisy"},
            {"id": "gone", "label": "setosa"},
            {"id": doc["id"], "row": 1, "label": "virginica"},
        ],
    )
    assert r.status_code == 207
    body = r.json()
    assert [x["result"] for x in body["results"]] == ["joined", "duplicate", "invalid", "unmatched", "joined"]
    assert [x["index"] for x in body["results"]] == [0, 1, 2, 3, 4]
    assert (body["joined"], body["duplicate"], body["invalid"], body["unmatched"]) == (2, 1, 1, 1)
    assert body["error"] == "3 of 5 items were not joined; see results"
    assert body["results"][2]["error"].startswith("[2].label: 'daisy' is not one of the model's classes")
    assert send(iris, {"id": doc["id"], "row": 1, "label": "setosa"}).status_code == 409


def test_inference_answers_and_local_labels_join_with_redis_dead(
    fresh_servers: ServerFactory, models: dict[str, Any], redis_server: Redis
) -> None:
    s = fresh_servers.start(*model_args(models, "iris-v1"), "--redis-url", redis_server.url)
    before = answer(s, [SETOSA])
    stop(redis_server.proc)
    docs = [answer(s, [[5.0 + i / 10, 3.0, 1.5, 0.2]]) for i in range(20)]
    assert len({d["id"] for d in docs}) == 20
    assert s.sample("rollwise_requests_total", outcome="server_error") == 0
    # this replica's own answers still join; an id it does not hold cannot be looked up
    assert send(s, {"id": before["id"], "label": "setosa"}).status_code == 200
    assert send(s, {"id": docs[3]["id"], "label": "setosa"}).status_code == 200
    r = send(s, {"id": "elsewhere", "label": "setosa"})
    assert r.status_code == 404
    assert r.json()["error"].endswith("; Redis (--feedback-redis-url) did not answer: send it again later")
    assert s.sample("rollwise_labelled_total") == 2


def test_tracking_off_keeps_nothing_and_says_so(fresh_servers: ServerFactory, models: dict[str, Any]) -> None:
    s = fresh_servers.start(*model_args(models, "iris-v1"), "--feedback-max-predictions", "0")
    doc = answer(s, [SETOSA])
    r = send(s, {"id": doc["id"], "label": "setosa"})
    assert (r.status_code, r.json()["error"]) == (
        404,
        "item.id: this server keeps no predictions (--feedback-max-predictions 0)",
    )


# ---- memory --------------------------------------------------------------------------------------------


def rss_bytes(server: Server) -> int:
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_million_unlabelled_predictions_stay_within_the_bound(
    fresh_servers: ServerFactory, models: dict[str, Any]
) -> None:
    """Two million rows into a store of one million: memory grows by the rows kept, then stops;
    the oldest answers are evicted, the newest still join."""
    s = fresh_servers.start(*model_args(models, "iris-v1"), "--max-body-bytes", str(8 << 20))
    rows, per_call = 1_000_000, 40_000
    rng = np.random.default_rng(0)
    x = rng.uniform([4, 2, 1, 0], [8, 4.5, 7, 2.5], size=(per_call, 4)).round(2)
    body = json.dumps(
        {
            "inputs": [
                {"name": "input-0", "shape": [per_call, 4], "datatype": "FP32", "data": x.ravel().tolist()}
            ]
        }
    ).encode()

    def fill() -> list[str]:
        ids = []
        for _ in range(rows // per_call):
            r = s.post(INFER, content=body)
            assert r.status_code == 200
            ids.append(r.headers["x-rollwise-prediction-id"])
        return ids

    answer(s, [SETOSA])  # libraries and the first big call's buffers come before measuring
    s.post(INFER, content=body)
    start = rss_bytes(s)
    first = fill()
    after_one = rss_bytes(s)
    second = fill()
    after_two = rss_bytes(s)
    mib = 1 << 20
    print(
        f"\nRSS: {start / mib:.1f} MiB before, {after_one / mib:.1f} MiB after 10^6 kept rows "
        f"(+{(after_one - start) / mib:.1f}), {after_two / mib:.1f} MiB after 10^6 more "
        f"(+{(after_two - after_one) / mib:.1f}; the oldest evicted)"
    )
    # 15 bytes a row (a labelled flag, a class code, three float32 probabilities): 14 MiB kept
    assert after_one - start < 64 * mib
    assert after_two - after_one < 16 * mib
    assert send(s, {"id": first[-1], "row": 0, "label": "setosa"}).status_code == 404
    assert send(s, {"id": second[0], "row": 0, "label": "setosa"}).status_code == 200
    assert send(s, {"id": second[-1], "row": per_call - 1, "label": "setosa"}).status_code == 200
