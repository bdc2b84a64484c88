"""Reading and comparing two answers (`rollwise_serving.agreement`), and the bounded `peer_version`.

The server tests (`tests/serving/test_shadow_agreement.py`) prove the comparison end to end with
real processes; these cover the answer shapes those runs do not produce: ONNX-style output
names and integer labels, nested data, answers that cannot be compared.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rollwise_contract.metrics import MAX_PEER_VERSIONS, Uncomparable
from rollwise_serving.agreement import (
    INPUT_BYTES,
    Answer,
    Comparison,
    UnreadableError,
    compare,
    input_rows,
    read_answer,
)
from rollwise_serving.metrics import ServerMetrics


def infer_answer(*outputs: dict[str, Any], version: str = "v2") -> bytes:
    return json.dumps({"model_name": "m", "model_version": version, "outputs": list(outputs)}).encode()


def tensor(name: str, datatype: str, shape: list[int], data: list[Any]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


@pytest.mark.parametrize(
    ("body", "classifier", "want"),
    [
        pytest.param(
            infer_answer(
                tensor("label", "BYTES", [2], ["a", "b"]),
                tensor("probabilities", "FP64", [2, 2], [0.9, 0.1, 0.2, 0.8]),
            ),
            True,
            Answer(2, "v2", labels=["a", "b"], probabilities=[[0.9, 0.1], [0.2, 0.8]]),
            id="scikit-learn's label and probabilities, flat data",
        ),
        pytest.param(
            infer_answer(
                tensor("output_label", "INT64", [2], [0, 1]),
                tensor("output_probability", "FP32", [2, 2], [[0.75, 0.25], [0.5, 0.5]]),
            ),
            True,
            Answer(2, "v2", labels=["0", "1"], probabilities=[[0.75, 0.25], [0.5, 0.5]]),
            id="ONNX's output_label and nested output_probability, found by type and shape",
        ),
        pytest.param(
            infer_answer(tensor("variable", "FP32", [3, 1], [[1.5], [2.0], [-1.0]])),
            False,
            Answer(3, "v2", values=[1.5, 2.0, -1.0]),
            id="an ONNX regressor's [N, 1] value",
        ),
        pytest.param(
            infer_answer(tensor("count", "INT64", [2], [3, 4])),
            False,
            Answer(2, "v2", values=[3.0, 4.0]),
            id="an integer output of a regressor is a value, not a class",
        ),
        pytest.param(
            json.dumps({"model_version": "v1", "predictions": ["x", "y"]}).encode(),
            None,
            Answer(2, "v1", labels=["x", "y"]),
            id="/predict classes",
        ),
        pytest.param(
            json.dumps({"model_version": "v1", "predictions": [0.5, None]}).encode(),
            False,
            Answer(2, "v1", values=[0.5, None]),
            id="/predict values, one not a number",
        ),
    ],
)
def test_answers_are_read_by_name_else_by_type_and_shape(
    body: bytes, classifier: bool | None, want: Answer
) -> None:
    assert read_answer(body, classifier=classifier) == want


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"not json", id="not JSON"),
        pytest.param(b"[1, 2]", id="not an object"),
        pytest.param(b'{"model_version": "v2"}', id="neither outputs nor predictions"),
        pytest.param(
            infer_answer(tensor("label", "BYTES", [3], ["a"])), id="fewer values than its shape says"
        ),
    ],
)
def test_what_is_not_an_answer_is_unreadable(body: bytes) -> None:
    with pytest.raises(UnreadableError):
        read_answer(body, classifier=True)


@pytest.mark.parametrize(
    ("own", "peer", "want"),
    [
        pytest.param(
            Answer(2, "v1", labels=["a", "b"]),
            Answer(3, "v2", labels=["a", "b", "c"]),
            Uncomparable.MISMATCH,
            id="another row count",
        ),
        pytest.param(
            Answer(1, "v1", labels=["a"]), Answer(1, "v2", values=[1.0]), Uncomparable.MISMATCH, id="no label"
        ),
        pytest.param(
            Answer(1, "v1", values=[1.0]), Answer(1, "v2", labels=["a"]), Uncomparable.MISMATCH, id="no value"
        ),
    ],
)
def test_answers_that_cannot_be_compared_say_why(own: Answer, peer: Answer, want: Uncomparable) -> None:
    assert compare(own, peer) == want


def test_classes_agree_and_probabilities_give_the_largest_difference() -> None:
    own = Answer(2, "v1", labels=["a", "b"], probabilities=[[0.9, 0.1], [0.4, 0.6]])
    peer = Answer(2, "v2", labels=["a", "a"], probabilities=[[0.7, 0.3], [0.55, 0.45]])
    result = compare(own, peer)
    assert isinstance(result, Comparison)
    assert [(r.agreed, r.differs) for r in result.rows] == [(True, False), (False, True)]
    assert [r.delta for r in result.rows] == pytest.approx([0.2, 0.15])


def test_a_classifier_without_probabilities_on_both_sides_has_no_delta() -> None:
    result = compare(Answer(1, "v1", labels=["a"], probabilities=[[1.0, 0.0]]), Answer(1, "v2", labels=["a"]))
    assert isinstance(result, Comparison) and result.rows[0].delta is None


def test_regressor_rows_without_a_number_are_uncomparable_and_rounding_does_not_differ() -> None:
    result = compare(
        Answer(3, "v1", values=[100.0, 2.0, 3.0]), Answer(3, "v2", values=[100.00001, None, 5.0])
    )
    assert isinstance(result, Comparison)
    assert result.uncomparable == 1
    assert [(r.index, r.differs) for r in result.rows] == [(0, False), (2, True)]
    assert [r.delta for r in result.rows] == pytest.approx([0.00001, 2.0])


def test_input_rows_are_cut_and_scrubbed() -> None:
    body = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "BYTES", "shape": [2, 1], "data": ["secret-token", "y" * 5000]}
            ]
        }
    ).encode()
    rows = input_rows("/v2/models/m/infer", body, [0, 1], lambda text: text.replace("secret-token", "***"))
    assert rows[0] == '{"x":["***"]}'
    assert len(rows[1]) == INPUT_BYTES + 3 and rows[1].endswith("...")
    instances = json.dumps({"instances": [{"a": 1}, {"a": 2}]}).encode()
    assert input_rows("/v2/models/m/predict", instances, [1], str) == {1: {"a": 2}}


def test_peer_versions_are_bounded() -> None:
    metrics = ServerMetrics(model="m", version="v1", track="stable")
    for i in range(MAX_PEER_VERSIONS + 3):
        metrics.shadow(f"v{i}").compared.inc()
    metrics.shadow(None).compared.inc()
    counts = {
        sample.labels["peer_version"]: sample.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for sample in family.samples
        if sample.name == "rollwise_shadow_compared_total"
    }
    named = {f"v{i}": 1.0 for i in range(MAX_PEER_VERSIONS)}
    assert counts == {**named, "other": 3.0, "unknown": 1.0}
