"""Explanations (#17): per-feature attributions from real `rollwise-serve` processes.

Known answers first: for f(x) = 2·x0 + 3·x1·x2 from a zero baseline the Shapley values are
(2·x0, 1.5·x1·x2, 1.5·x1·x2) exactly, so the exact method must give them and the sampled one
must give the additive parts exactly (each order credits x_i with the same 2·x_i) and split the
interaction with a stated standard error. Then the real models: scikit-learn's logistic
regression (linear attributions on its decision function, compared with scikit-learn's own) and
the ONNX MLP (model-agnostic), each adding up to value minus base value.
"""

from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest

from tests.serving.conftest import (
    SETOSA,
    VERSICOLOR,
    VIRGINICA,
    Server,
    ServerFactory,
    infer_body,
    model_args,
    schema_args,
)
from tests.serving.test_shadow_agreement import python_model

INTERACTION = """
import numpy as np


class Model:
    def predict(self, inputs):
        x = np.asarray(next(iter(inputs.values())), dtype=np.float64)
        return {"prediction": 2.0 * x[:, :-2].sum(axis=1) + 3.0 * x[:, -2] * x[:, -1]}
"""
"""Additive in every feature but the last two, which interact."""

SLOW = """
import time
import numpy as np


class Model:
    def predict(self, inputs):
        x = np.asarray(next(iter(inputs.values())), dtype=np.float64)
        time.sleep(0.2)
        return {"prediction": x.sum(axis=1)}
"""


def explain(server: Server, rows: list[list[float]], **extra: Any) -> httpx.Response:
    return server.post(f"/v2/models/{server_name(server)}/explain", content=infer_body(rows, "FP64", **extra))


def server_name(server: Server) -> str:
    return server.args[server.args.index("--name") + 1]


def interaction_server(servers: ServerFactory, tmp: Path, width: int, *extra: str) -> Server:
    baseline = json.dumps([0.0] * width)
    args = python_model(tmp, f"interaction-{width}.py", INTERACTION, version="v1", name="f")
    return servers.start(*args, "--explain", "true", "--explain-baseline", baseline, *extra)


def test_exact_shapley_values_of_a_known_function(fresh_servers: ServerFactory, tmp_path: Path) -> None:
    s = interaction_server(fresh_servers, tmp_path, 3)
    rows = [[1.0, 2.0, 3.0], [-0.5, 4.0, -1.0], [0.0, 0.0, 0.0]]
    r = explain(s, rows)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["method"] == "exact_shapley" and doc["target"] == "prediction"
    assert doc["baseline"] == [0.0, 0.0, 0.0]
    for row, got in zip(rows, doc["explanations"], strict=True):
        x0, x1, x2 = row
        np.testing.assert_allclose(got["attributions"], [2 * x0, 1.5 * x1 * x2, 1.5 * x1 * x2], atol=1e-12)
        assert got["value"] == pytest.approx(2 * x0 + 3 * x1 * x2)
        assert got["base_value"] == 0
    # Explanations are not inference: not counted as requests, nor in the feature metrics.
    assert s.sample("rollwise_requests_total") == 0
    assert s.sample("rollwise_explained_rows_total", method="exact_shapley") == 3
    assert s.sample("rollwise_attribution_abs_total", feature="x0") == pytest.approx(2 + 1 + 0)
    assert s.sample("rollwise_attribution_abs_total", feature="x1") == pytest.approx(1.5 * (6 + 4))


def test_sampled_shapley_values_add_up_and_state_their_error(
    fresh_servers: ServerFactory, tmp_path: Path
) -> None:
    width = 12
    s = interaction_server(fresh_servers, tmp_path, width, "--explain-max-evaluations", "4096")
    rng = np.random.default_rng(3)
    rows = rng.normal(0, 2, (4, width)).round(3).tolist()
    first, again = explain(s, rows), explain(s, rows)
    assert first.status_code == 200, first.text
    assert first.json() == again.json()  # seeded by the request: the same answer twice
    doc = first.json()
    assert doc["method"] == "sampled_shapley"
    for row, got in zip(rows, doc["explanations"], strict=True):
        phi, stderr = np.array(got["attributions"]), np.array(got["stderr"])
        np.testing.assert_allclose(phi[:-2], 2 * np.array(row[:-2]), atol=1e-9)  # additive: exact
        np.testing.assert_allclose(stderr[:-2], 0, atol=1e-9)
        interaction = 3 * row[-2] * row[-1]
        assert phi[-2] + phi[-1] == pytest.approx(interaction)
        # each half of the interaction is estimated; the truth (1.5 x x') is within 5 standard errors
        for k in (-2, -1):
            assert abs(phi[k] - interaction / 2) <= 5 * stderr[k] + 1e-9, (phi[k], stderr[k])
        assert phi.sum() == pytest.approx(got["value"] - got["base_value"])


def test_logistic_regression_is_explained_linearly_on_its_decision_function(
    fresh_servers: ServerFactory, models: dict[str, Any]
) -> None:
    s = fresh_servers.start(*model_args(models, "iris-v1"), *schema_args(models), "--explain", "true")
    rows = [SETOSA, VERSICOLOR, VIRGINICA]
    doc = explain(s, rows).json()
    assert doc["method"] == "linear" and doc["target"] == "decision_function"
    assert doc["features"] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    reference = json.loads((models["dir"] / models["reference"]).read_text())
    assert len(doc["baseline"]) == 4
    for name, value in zip(doc["features"], doc["baseline"], strict=True):
        assert value in reference["features"][name]["cuts"]  # a median on the reference's cuts
    model = joblib.load(models["dir"] / models["models"]["iris-v1"]["file"])
    decision = model.decision_function(np.array(rows))
    for i, got in enumerate(doc["explanations"]):
        k = list(model.classes_).index(got["class"])
        assert got["class"] == ["setosa", "versicolor", "virginica"][i]
        assert got["value"] == pytest.approx(decision[i, k])
        assert sum(got["attributions"]) == pytest.approx(got["value"] - got["base_value"])
        np.testing.assert_allclose(
            got["attributions"], model.coef_[k] * (np.array(rows[i]) - np.array(doc["baseline"]))
        )


def test_a_neural_network_is_explained_model_agnostically(
    fresh_servers: ServerFactory, models: dict[str, Any]
) -> None:
    s = fresh_servers.start(*model_args(models, "iris-mlp-onnx"), *schema_args(models), "--explain", "true")
    rows = [SETOSA, VIRGINICA]
    r = explain(s, rows, parameters={"explain_class": 2})  # the graph does not name its classes
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["method"] == "exact_shapley" and doc["target"] == "probability"
    answer = s.post("/v2/models/iris/infer", content=infer_body(rows, "FP64")).json()
    probabilities = next(o for o in answer["outputs"] if o["name"] == "probabilities")["data"]
    for i, got in enumerate(doc["explanations"]):
        assert got["class"] == 2
        assert got["value"] == pytest.approx(probabilities[3 * i + 2], abs=1e-6)
        assert sum(got["attributions"]) == pytest.approx(got["value"] - got["base_value"], abs=1e-9)
    # The virginica row's probability rises from the baseline mostly through the petals.
    petals = sum(doc["explanations"][1]["attributions"][2:])
    assert petals > abs(sum(doc["explanations"][1]["attributions"][:2]))


def test_explanations_are_off_by_default_and_bounded(
    fresh_servers: ServerFactory, models: dict[str, Any], tmp_path: Path
) -> None:
    off = fresh_servers.start(*model_args(models, "iris-v1"), *schema_args(models))
    r = explain(off, [SETOSA])
    assert r.status_code == 404 and "start it with --explain" in r.json()["error"]
    on = fresh_servers.start(*model_args(models, "iris-v1"), *schema_args(models), "--explain", "true")
    too_many = explain(on, [SETOSA] * 17)
    assert too_many.status_code == 400 and "at most 16 rows (--explain-max-rows)" in too_many.json()["error"]
    wrong_class = explain(on, [SETOSA], parameters={"explain_class": "rose"})
    assert wrong_class.status_code == 400 and "'rose' is not a class" in wrong_class.json()["error"]
    invalid = explain(on, [[5.1, 3.5, 1.4, -9.0]])
    assert invalid.status_code == 422  # the feature schema checks explained rows as it checks inferred ones
    no_baseline = fresh_servers.start(*model_args(models, "iris-v1"), "--explain", "true")
    r = explain(no_baseline, [SETOSA])
    assert r.status_code == 400 and "no baseline to attribute from" in r.json()["error"]


def test_a_slow_explanation_times_out_and_one_runs_at_a_time(
    fresh_servers: ServerFactory, tmp_path: Path
) -> None:
    args = python_model(tmp_path, "slow.py", SLOW, version="v1", name="slow")
    baseline = ["--explain-baseline", "[0, 0]"]
    s = fresh_servers.start(*args, "--explain", "true", *baseline, "--explain-timeout-ms", "150")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        # exact Shapley on 2 features is two 0.2 s model calls (the target, then the coalitions):
        # the deadline passes after the first; a second explanation meanwhile is refused
        futures = [pool.submit(explain, s, [[1.0, 2.0]]) for _ in range(2)]
        answers = sorted((f.result() for f in futures), key=lambda r: r.status_code)
    assert [r.status_code for r in answers] == [429, 504], [r.text for r in answers]
    assert "already running" in answers[0].json()["error"]
    assert "--explain-timeout-ms" in answers[1].json()["error"]
    # inference is served meanwhile and afterwards
    assert s.post("/v2/models/slow/infer", content=infer_body([[1.0, 2.0]], "FP64")).status_code == 200
