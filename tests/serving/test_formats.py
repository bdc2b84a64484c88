"""XGBoost and LightGBM models (#17): real `rollwise-serve` processes serving boosters trained here.

Each model is trained in a tmp dir on Iris (classifiers) or a synthetic regression (regressors):
XGBoost natively (`xgb.train`) and through its scikit-learn API (`XGBClassifier.save_model`), as
JSON and as UBJ; LightGBM as a text model. The server must answer what the library itself
predicts on the same rows (labels exactly, probabilities and values within float tolerance), in
JSON and binary REST, one by one and micro-batched, and feed the prediction metrics and the
feedback join (log loss) as scikit-learn models do. Wrong widths and corrupt files are refused
with the reason.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import lightgbm as lgb
import numpy as np
import pytest
import tritonclient.http as triton
import xgboost as xgb
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_iris, make_regression

from tests.serving.conftest import Server, ServerFactory, infer_body

IRIS_X, IRIS_Y = load_iris(return_X_y=True)
REG_X, REG_Y = make_regression(n_samples=300, n_features=6, noise=5.0, random_state=17)
ROUNDS = 8


@dataclass
class Trained:
    """A model file and what its own library answers for a batch of rows."""

    file: Path
    format: str
    rows: np.ndarray[Any, Any]
    expected: Callable[[np.ndarray[Any, Any]], dict[str, np.ndarray[Any, Any]]]

    @property
    def classifier(self) -> bool:
        return "label" in self.expected(self.rows[:1])


def _train(tmp: Path) -> dict[str, Trained]:
    native = xgb.train(
        {"objective": "multi:softprob", "num_class": 3, "max_depth": 2, "nthread": 1},
        xgb.DMatrix(IRIS_X, IRIS_Y),
        ROUNDS,
    )
    native.save_model(tmp / "native.json")
    native.save_model(tmp / "native.ubj")

    def native_answer(x: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
        p = native.predict(xgb.DMatrix(x))
        return {"label": p.argmax(axis=1), "probabilities": p}

    binary = xgb.train(
        {"objective": "binary:logistic", "max_depth": 2, "nthread": 1},
        xgb.DMatrix(IRIS_X, IRIS_Y == 1),
        ROUNDS,
    )
    binary.save_model(tmp / "binary.ubj")

    def binary_answer(x: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
        p = binary.predict(xgb.DMatrix(x))
        return {"label": (p > 0.5).astype(int), "probabilities": np.column_stack([1 - p, p])}

    sk = xgb.XGBClassifier(n_estimators=ROUNDS, max_depth=2, n_jobs=1).fit(IRIS_X, IRIS_Y)
    sk.save_model(tmp / "sklearn-api.ubj")
    sk.save_model(tmp / "sklearn-api.json")
    reg = xgb.XGBRegressor(n_estimators=ROUNDS, max_depth=3, n_jobs=1).fit(REG_X, REG_Y)
    reg.save_model(tmp / "regressor.json")
    lgb_iris = lgb.train(
        {"objective": "multiclass", "num_class": 3, "num_threads": 1, "verbose": -1},
        lgb.Dataset(IRIS_X, IRIS_Y),
        ROUNDS,
    )
    lgb_iris.save_model(tmp / "iris.txt")
    lgb_reg = lgb.train(
        {"objective": "regression", "num_threads": 1, "verbose": -1}, lgb.Dataset(REG_X, REG_Y), ROUNDS
    )
    lgb_reg.save_model(tmp / "regressor.txt")

    def lgb_iris_answer(x: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
        p = lgb_iris.predict(x)
        return {"label": p.argmax(axis=1), "probabilities": p}

    def sk_answer(x: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
        return {"label": sk.predict(x), "probabilities": sk.predict_proba(x)}

    iris_rows = IRIS_X[::3]
    reg_rows = REG_X[::5]
    return {
        "xgboost-native-json": Trained(tmp / "native.json", "xgboost", iris_rows, native_answer),
        "xgboost-native-ubj": Trained(tmp / "native.ubj", "xgboost", iris_rows, native_answer),
        "xgboost-binary-ubj": Trained(tmp / "binary.ubj", "xgboost", iris_rows, binary_answer),
        "xgboost-sklearn-ubj": Trained(tmp / "sklearn-api.ubj", "xgboost", iris_rows, sk_answer),
        "xgboost-sklearn-json": Trained(tmp / "sklearn-api.json", "xgboost", iris_rows, sk_answer),
        "xgboost-regressor": Trained(
            tmp / "regressor.json", "xgboost", reg_rows, lambda x: {"prediction": reg.predict(x)}
        ),
        "lightgbm-classifier": Trained(tmp / "iris.txt", "lightgbm", iris_rows, lgb_iris_answer),
        "lightgbm-regressor": Trained(
            tmp / "regressor.txt", "lightgbm", reg_rows, lambda x: {"prediction": lgb_reg.predict(x)}
        ),
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Trained]:
    return _train(tmp_path_factory.mktemp("boosters"))


def serve_args(model: Trained, *extra: str, version: str = "v1") -> list[str]:
    # No --sha256: these formats are data, not code (the server logs "loaded, not verified").
    return [
        "--model-uri",
        str(model.file),
        "--format",
        model.format,
        "--name",
        "m",
        "--version",
        version,
        *extra,
    ]


@pytest.fixture(scope="module")
def running(servers: ServerFactory, trained: dict[str, Trained]) -> dict[str, Server]:
    return {key: servers.start(*serve_args(model)) for key, model in trained.items()}


MODELS = [
    "xgboost-native-json",
    "xgboost-native-ubj",
    "xgboost-binary-ubj",
    "xgboost-sklearn-ubj",
    "xgboost-sklearn-json",
    "xgboost-regressor",
    "lightgbm-classifier",
    "lightgbm-regressor",
]


def infer(
    server: Server, rows: np.ndarray[Any, Any], datatype: str = "FP64"
) -> dict[str, np.ndarray[Any, Any]]:
    r = server.post("/v2/models/m/infer", content=infer_body(rows.tolist(), datatype))
    assert r.status_code == 200, r.text
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in r.json()["outputs"]}


def assert_same(got: dict[str, np.ndarray[Any, Any]], want: dict[str, np.ndarray[Any, Any]]) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        if name == "label":
            assert got[name].tolist() == value.tolist(), name
        else:
            np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("key", MODELS)
def test_metadata_names_the_format_and_the_models_own_width(
    running: dict[str, Server], trained: dict[str, Trained], key: str
) -> None:
    model = trained[key]
    meta = running[key].get("/v2/models/m").json()
    width = model.rows.shape[1]
    assert meta["platform"] == model.format
    datatype = "FP32" if model.format == "xgboost" else "FP64"
    assert meta["inputs"] == [{"name": "input-0", "datatype": datatype, "shape": [-1, width]}]
    names = [o["name"] for o in meta["outputs"]]
    assert names == (["label", "probabilities"] if model.classifier else ["prediction"])
    ready = running[key].get("/v2/health/ready").json()
    assert ready["models"][0]["format"] == model.format
    assert "loaded, not verified" in ready["models"][0]["reason"]


@pytest.mark.parametrize("key", MODELS)
def test_answers_equal_the_librarys_own_predict_one_row_and_all_rows(
    running: dict[str, Server], trained: dict[str, Trained], key: str
) -> None:
    model, server = trained[key], running[key]
    assert_same(infer(server, model.rows[:1]), model.expected(model.rows[:1]))
    assert_same(infer(server, model.rows), model.expected(model.rows))
    # FP32 requests answer as the library does on the same FP32 values
    as_fp32 = model.rows.astype(np.float32)
    assert_same(infer(server, as_fp32, "FP32"), model.expected(as_fp32))


@pytest.mark.parametrize("key", ["xgboost-sklearn-ubj", "lightgbm-classifier", "lightgbm-regressor"])
def test_a_thousand_rows_answer_the_same_in_json_and_binary_rest(
    running: dict[str, Server], trained: dict[str, Trained], key: str
) -> None:
    model, server = trained[key], running[key]
    rng = np.random.default_rng(7)
    rows = model.rows[rng.integers(0, len(model.rows), 1_000)] + rng.normal(
        0, 0.05, (1_000, model.rows.shape[1])
    )
    want = model.expected(rows)
    assert_same(infer(server, rows), want)
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}", network_timeout=30)
    try:
        tensor = triton.InferInput("input-0", list(rows.shape), "FP64")
        tensor.set_data_from_numpy(rows, binary_data=True)
        result = client.infer("m", [tensor])  # binary_data_output: outputs come back as raw bytes too
    finally:
        client.close()
    got = {name: result.as_numpy(name) for name in want}
    assert_same(got, want)


def one_row_each_concurrently(
    server: Server, rows: np.ndarray[Any, Any], callers: int = 10
) -> dict[int, Any]:
    """Every row as its own request, ``callers`` threads at once: the server batches them."""
    seen: dict[int, Any] = {}
    lock = threading.Lock()

    def caller(offset: int) -> None:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            for i in range(offset, len(rows), callers):
                r = c.post("/v2/models/m/infer", content=infer_body([rows[i].tolist()], "FP64"))
                assert r.status_code == 200, r.text
                with lock:
                    seen[i] = {o["name"]: o["data"] for o in r.json()["outputs"]}

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return seen


@pytest.mark.parametrize("key", ["xgboost-native-json", "lightgbm-classifier", "xgboost-regressor"])
def test_concurrent_requests_batched_together_get_their_own_answers(
    fresh_servers: ServerFactory, trained: dict[str, Trained], key: str
) -> None:
    """Micro-batching stacks concurrent requests into one predict call: each caller must still get
    the answer for its own row, exactly as one by one."""
    model = trained[key]
    server = fresh_servers.start(*serve_args(model, "--max-batch-size", "8"))
    alone = {i: infer(server, model.rows[i : i + 1]) for i in range(len(model.rows))}
    together = one_row_each_concurrently(server, model.rows)
    assert sorted(together) == list(range(len(model.rows)))
    for i, out in together.items():
        assert set(out) == set(alone[i])
        for name, value in out.items():
            assert value == alone[i][name].ravel().tolist(), (i, name)
    assert_same(
        {name: np.asarray([together[i][name] for i in sorted(together)]).squeeze(1) for name in alone[0]}
        if not model.classifier
        else {
            "label": np.asarray([together[i]["label"][0] for i in sorted(together)]),
            "probabilities": np.asarray([together[i]["probabilities"] for i in sorted(together)]),
        },
        model.expected(model.rows),
    )


def test_prediction_metrics_count_classes_and_values(
    fresh_servers: ServerFactory, trained: dict[str, Trained]
) -> None:
    model = trained["xgboost-sklearn-ubj"]
    s = fresh_servers.start(*serve_args(model))
    labels = infer(s, model.rows)["label"].tolist()
    for c in (0, 1, 2):
        assert s.sample("rollwise_prediction_value_count", **{"class": str(c)}) == labels.count(c)
    assert s.sample("rollwise_requests_total", outcome="success") == 1
    reg = trained["lightgbm-regressor"]
    r = fresh_servers.start(*serve_args(reg))
    values = infer(r, reg.rows)["prediction"]
    assert r.sample("rollwise_prediction_value_count", **{"class": ""}) == len(values)
    # the histogram's buckets hold the values the answer carried (this server exports no _sum)
    buckets = [
        (float(sample.labels["le"]), sample.value)
        for family in text_string_to_metric_families(r.metrics())
        for sample in family.samples
        if sample.name == "rollwise_prediction_value_bucket"
    ]
    assert len(buckets) > 2
    for le, count in buckets:
        assert count == int((values <= le).sum()), le


def test_declared_classes_name_the_indices_in_metrics_and_feedback_with_log_loss(
    fresh_servers: ServerFactory, trained: dict[str, Trained], tmp_path: Path
) -> None:
    names = ["setosa", "versicolor", "virginica"]
    schema = tmp_path / "schema.json"
    features = [{"name": f"f{i}", "type": "float"} for i in range(4)]
    segments = [{"feature": "f2", "bins": [2.5]}]  # petal length: setosa below 2.5
    output = {"kind": "classifier", "classes": names}
    schema.write_text(json.dumps({"features": features, "output": output, "segments": segments}))
    model = trained["lightgbm-classifier"]
    s = fresh_servers.start(*serve_args(model, "--feature-schema", str(schema)))
    rows = IRIS_X[[0, 60, 120]]
    r = s.post("/v2/models/m/infer", content=infer_body(rows.tolist(), "FP64"))
    assert r.status_code == 200, r.text
    doc = r.json()
    out = {o["name"]: o for o in doc["outputs"]}
    want = model.expected(rows)
    assert out["label"]["datatype"] == "BYTES"
    assert out["label"]["data"] == [names[i] for i in want["label"]]
    for name in names:
        assert s.sample("rollwise_prediction_value_count", **{"class": name}) == out["label"]["data"].count(
            name
        )
    truth = ["setosa", "virginica", "virginica"]
    probabilities = np.asarray(out["probabilities"]["data"]).reshape(3, 3)
    fb = s.post(
        "/v2/models/m/feedback",
        content=json.dumps([{"id": doc["id"], "row": i, "label": t} for i, t in enumerate(truth)]),
    )
    assert fb.status_code == 200, fb.text
    assert fb.json()["joined"] == 3
    losses = [
        -math.log(max(float(np.float32(probabilities[i, names.index(t)])), 1e-15))
        for i, t in enumerate(truth)
    ]
    assert s.sample("rollwise_label_with_probabilities_total") == 3
    assert s.sample("rollwise_label_log_loss_total") == pytest.approx(sum(losses), rel=1e-9)
    correct = sum(a == b for a, b in zip(out["label"]["data"], truth, strict=True))
    assert s.sample("rollwise_label_correct_total") == correct
    # per segment: every row predicted and labelled once, by its declared class name
    for name in names:
        assert s.sample("rollwise_segment_predictions_total", segment="f2", **{"class": name}) == out[
            "label"
        ]["data"].count(name)
    assert s.sample("rollwise_segment_labelled_total", segment="f2") == 3
    assert s.sample("rollwise_segment_label_correct_total", segment="f2") == correct


def test_feedback_on_index_classes_joins_with_log_loss(
    fresh_servers: ServerFactory, trained: dict[str, Trained]
) -> None:
    model = trained["xgboost-native-ubj"]
    s = fresh_servers.start(*serve_args(model))
    rows = IRIS_X[[0, 60, 120]]
    r = s.post("/v2/models/m/infer", content=infer_body(rows.tolist(), "FP64"))
    doc = r.json()
    probabilities = np.asarray(model.expected(rows)["probabilities"])
    truth = ["0", "2", "2"]
    fb = s.post(
        "/v2/models/m/feedback",
        content=json.dumps([{"id": doc["id"], "row": i, "label": t} for i, t in enumerate(truth)]),
    )
    assert fb.status_code == 200, fb.text
    losses = [-math.log(max(float(probabilities[i, int(t)]), 1e-15)) for i, t in enumerate(truth)]
    assert s.sample("rollwise_label_log_loss_total") == pytest.approx(sum(losses), rel=1e-6)


def test_a_lightgbm_shadow_of_an_xgboost_stable_is_compared_row_by_row(
    fresh_servers: ServerFactory, trained: dict[str, Trained]
) -> None:
    """Shadow agreement reads both boosters' answers as it reads scikit-learn's: the same class
    index agrees, and each row's delta is its largest probability difference."""
    own, peer = trained["xgboost-native-json"], trained["lightgbm-classifier"]
    candidate = fresh_servers.start(*serve_args(peer, "--track", "candidate", version="v2"))
    stable = fresh_servers.start(*serve_args(own, "--mirror-url", candidate.url))
    rows = IRIS_X[::3]
    infer(stable, rows)
    a, b = own.expected(rows), peer.expected(rows)
    deadline = time.monotonic() + 15
    while stable.sample("rollwise_shadow_compared_total", peer_version="v2") < len(rows):
        assert time.monotonic() < deadline, stable.logs()[-2000:]
        time.sleep(0.05)
    assert stable.sample("rollwise_shadow_compared_total") == len(rows)
    assert stable.sample("rollwise_shadow_agreed_total") == int((a["label"] == b["label"]).sum())
    assert stable.sample("rollwise_shadow_uncomparable_total") == 0
    deltas = np.abs(a["probabilities"].astype(np.float64) - b["probabilities"]).max(axis=1)
    assert stable.sample("rollwise_shadow_delta_count") == len(rows)
    assert stable.sample("rollwise_shadow_delta_sum") == pytest.approx(float(deltas.sum()), rel=1e-5)


@pytest.mark.parametrize("key", ["xgboost-native-json", "lightgbm-regressor"])
def test_a_wrong_width_is_refused_naming_the_input_and_the_shape(
    running: dict[str, Server], trained: dict[str, Trained], key: str
) -> None:
    width = trained[key].rows.shape[1]
    r = running[key].post("/v2/models/m/infer", content=infer_body([[1.0] * (width + 1)], "FP64"))
    assert r.status_code == 400
    assert (
        r.json()["error"] == f"input 'input-0' has shape [1, {width + 1}]; the model expects ['N', {width}]"
    )
    text = running[key].post(
        "/v2/models/m/infer",
        content=json.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "BYTES", "data": ["a"]}]}),
    )
    assert text.status_code == 400


@pytest.mark.parametrize(
    ("key", "damage", "reason"),
    [
        pytest.param(
            "xgboost-native-json", "truncate", "is not a loadable XGBoost model", id="truncated JSON"
        ),
        pytest.param("xgboost-native-ubj", "garbage", "is not a loadable XGBoost model", id="garbage as UBJ"),
        pytest.param(
            "lightgbm-classifier", "truncate", "is not a loadable LightGBM text model", id="truncated text"
        ),
        pytest.param(
            "lightgbm-classifier", "garbage", "is not a loadable LightGBM text model", id="garbage as text"
        ),
    ],
)
def test_a_corrupt_model_file_is_refused_at_load_and_readiness_says_why(
    fresh_servers: ServerFactory,
    trained: dict[str, Trained],
    tmp_path: Path,
    key: str,
    damage: str,
    reason: str,
) -> None:
    model = trained[key]
    raw = model.file.read_bytes()
    bad = tmp_path / model.file.name
    bad.write_bytes(raw[: len(raw) * 2 // 3] if damage == "truncate" else b"not a model at all\n" * 20)
    s = fresh_servers.start(
        *serve_args(Trained(bad, model.format, model.rows, model.expected)), wait_ready=False
    )
    # The file is parsed first in a child process (a fresh interpreter importing the library):
    # seconds on a loaded machine, so wait by the clock, not by a number of polls.
    deadline = time.monotonic() + 120
    ready = s.get("/v2/health/ready")
    while ready.json()["models"][0]["state"] == "loading" and time.monotonic() < deadline:
        time.sleep(0.1)
        ready = s.get("/v2/health/ready")
    assert ready.status_code == 503
    assert ready.json()["models"][0]["state"] == "failed"
    assert reason in ready.json()["reason"], ready.json()
    # the server survived the library's parser and still answers
    assert s.get("/v2/health/live").status_code == 200
    r = s.post("/v2/models/m/infer", content=infer_body([[1.0] * model.rows.shape[1]], "FP64"))
    assert r.status_code == 503


@pytest.mark.parametrize(
    "key",
    [
        "xgboost-native-json",
        "xgboost-binary-ubj",
        "xgboost-regressor",
        "lightgbm-classifier",
        "lightgbm-regressor",
    ],
)
def test_tree_models_are_explained_with_the_librarys_own_treeshap(
    servers: ServerFactory, trained: dict[str, Trained], key: str
) -> None:
    """`explain` answers XGBoost's and LightGBM's own TreeSHAP values for each row's class, on
    the margin, and they add up to the margin the library computes."""
    model = trained[key]
    s = servers.start(*serve_args(model, "--explain", "true"))
    rows = model.rows[:5]
    r = s.post("/v2/models/m/explain", content=infer_body(rows.tolist(), "FP64"))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["method"] == "tree_shap" and doc["target"] == "margin" and doc["baseline"] is None
    if model.format == "xgboost":
        booster = xgb.Booster(model_file=str(model.file))
        margins = np.asarray(booster.predict(xgb.DMatrix(rows), output_margin=True))
        contribs = np.asarray(booster.predict(xgb.DMatrix(rows), pred_contribs=True))
    else:
        lgb_booster = lgb.Booster(model_file=str(model.file))
        margins = np.asarray(lgb_booster.predict(rows, raw_score=True))
        contribs = np.asarray(lgb_booster.predict(rows, pred_contrib=True))
        if margins.ndim == 2:
            contribs = contribs.reshape(len(rows), margins.shape[1], -1)
    answers = infer(s, rows)
    for i, got in enumerate(doc["explanations"]):
        if margins.ndim == 2:  # multiclass: the row's predicted class
            k = int(answers["probabilities"][i].argmax())
            want_margin, want = margins[i, k], contribs[i, k]
        elif model.classifier:  # binary: class 1's margin, negated for a row explained as class 0
            sign = 1.0 if int(answers["probabilities"][i].argmax()) == 1 else -1.0
            want_margin, want = sign * margins[i], sign * contribs[i]
        else:
            want_margin, want = margins[i], contribs[i]
        assert got["value"] == pytest.approx(float(want_margin), rel=1e-5, abs=1e-5)
        np.testing.assert_allclose(got["attributions"], want[:-1], rtol=1e-5, atol=1e-6)
        assert got["base_value"] == pytest.approx(float(want[-1]), rel=1e-5, abs=1e-6)
        assert sum(got["attributions"]) == pytest.approx(got["value"] - got["base_value"], rel=1e-5, abs=1e-5)
