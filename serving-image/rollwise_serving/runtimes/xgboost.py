"""XGBoost boosters saved with ``save_model`` as JSON or UBJ, trained natively or through the
scikit-learn API (``XGBClassifier``/``XGBRegressor`` save the same booster).

JSON and UBJ are data, not code, so a digest is checked when pinned but not required. The file is
parsed once in a child process first (``probe_load``): a damaged UBJ can make the parser spin.
The format is read from the bytes, not the file name, so a cached copy needs no extension.

What the booster answers follows its objective:

- ``multi:softprob``: ``probabilities`` [N, classes] and ``label`` (the most probable class);
- ``multi:softmax``: the same, its probabilities the softmax of the margins (what
  ``multi:softprob`` would give; its own predict returns only the argmax, which is our label);
- ``binary:logistic`` / ``binary:logitraw``: probabilities [1 - p, p] and the label, as
  ``XGBClassifier.predict_proba`` / ``predict`` give (label 1 when p > 0.5);
- ``binary:hinge``: the label only (it has no probabilities);
- anything else (``reg:*``, ``count:*``, ``survival:*``, ``rank:*``): ``prediction``, one value
  per row (one per target for multi-target models).

XGBoost stores no class labels (its scikit-learn API requires labels 0..k-1), so a classifier's
classes are its indices, ``label`` an INT64 like ``XGBClassifier.predict``; a feature schema whose
``output.classes`` lists one name per index names them instead (``label`` is then BYTES). When
early stopping recorded a ``best_iteration``, trees up to it answer, as ``XGBClassifier.predict``
does. Inputs are FP32, the type XGBoost compares thresholds in, so any numeric request is cast
to it here and concurrent FP32 and FP64 requests share a micro-batch.

Threads: one per predict call by default (``ROLLWISE_XGBOOST_THREADS``). XGBoost's default is
every core the node has, not the pod's CPU limit: on a 2-core pod the OpenMP team would be
throttled by the CFS quota and fight the event loop, which needs the other core to decode and
encode requests; micro-batches of small trees gain little from more threads anyway.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import xgboost as xgb
from rollwise_contract.model import ModelFormat

from rollwise_serving.errors import ArtifactError
from rollwise_serving.protocol import InferInput
from rollwise_serving.runtimes import (
    Array,
    Contributions,
    Prediction,
    TensorSpec,
    check_shape,
    class_labels,
    classify,
    declared_type,
    label_spec,
    probe_load,
    single_input,
    threads_from_env,
    tree_contributions,
)

INPUT_NAME = "input-0"
_PROBE = "import sys, xgboost; b = xgboost.Booster(); b.load_model(bytearray(open(sys.argv[1], 'rb').read()))"
_PROBABILITY_OBJECTIVES = {"multi:softprob", "multi:softmax", "binary:logistic", "binary:logitraw"}
_LABEL_OBJECTIVES = {"binary:hinge"}


class XGBoostRuntime:
    format: ClassVar[ModelFormat] = ModelFormat.XGBOOST
    batchable = True

    def __init__(self, path: Path, *, class_names: Sequence[str] | None = None) -> None:
        threads = threads_from_env("ROLLWISE_XGBOOST_THREADS")
        probe_load(path, _PROBE, "XGBoost model (JSON or UBJ from save_model)")
        self.booster = xgb.Booster()
        try:
            # From the bytes: XGBoost tells JSON from UBJ by their first bytes, where loading from
            # a path would go by its extension.
            self.booster.load_model(bytearray(path.read_bytes()))
            learner: dict[str, Any] = json.loads(self.booster.save_config())["learner"]
        except xgb.core.XGBoostError as err:
            raise ArtifactError(f"{path.name} is not a loadable XGBoost model: {_first_line(err)}") from err
        self.booster.set_param({"nthread": threads})
        self._shap: xgb.Booster | None = None
        self.objective: str = learner["objective"]["name"]
        params = learner["learner_model_param"]
        best = self.booster.attr("best_iteration")
        self._iterations = (0, int(best) + 1) if best is not None else (0, 0)
        self.inputs = [TensorSpec(INPUT_NAME, "FP32", (-1, self.booster.num_features()))]
        if self.objective in _PROBABILITY_OBJECTIVES | _LABEL_OBJECTIVES:
            count = max(int(params.get("num_class", "0")), 2)
            self._classes: Array | None = class_labels(class_names, count, self.format)
            self.classes: list[str] | None = [str(c) for c in self._classes]
            self.outputs = [label_spec(self._classes)]
            if self.objective in _PROBABILITY_OBJECTIVES:
                self.outputs.append(TensorSpec("probabilities", "FP32", (-1, count)))
        else:
            if class_names is not None:
                raise ArtifactError(
                    f"the feature schema declares classes, but this XGBoost model's objective "
                    f"{self.objective} is a regressor's; drop output.classes or serve a classifier"
                )
            self._classes, self.classes = None, None
            targets = int(params.get("num_target", "1"))
            self.outputs = [TensorSpec("prediction", "FP32", (-1,) if targets <= 1 else (-1, targets))]

    def prepare(self, inputs: Sequence[InferInput]) -> dict[str, Array]:
        tensor = single_input(self.inputs[0], inputs)
        check_shape(self.inputs[0], tensor)
        return {INPUT_NAME: declared_type(self.inputs[0], tensor)}

    def predict(self, inputs: Mapping[str, Array]) -> Prediction:
        x = inputs[INPUT_NAME]
        if self._classes is None:
            value = self._run(x)
            return Prediction({"prediction": value}, None, value if value.ndim == 1 else value[:, 0])
        if self.objective in _LABEL_OBJECTIVES:
            index = self._run(x).astype(np.int64)
            labels = self._classes[index]
            return Prediction({"label": labels}, labels, None, index)
        probabilities = self._probabilities(x)
        labels, scores, index = classify(probabilities, self._classes)
        return Prediction({"label": labels, "probabilities": probabilities}, labels, scores, index)

    def contributions(
        self, inputs: Mapping[str, Array], classes: Array | None, baseline: Array | None
    ) -> Contributions | None:
        """TreeSHAP from XGBoost itself (``pred_contribs``), on the margin, for ``explain``; on a
        copy of the booster, since ``Booster.predict`` is not safe beside the serving thread's
        ``inplace_predict``."""
        if self._shap is None:
            self._shap = self.booster.copy()
        contribs = self._shap.predict(
            xgb.DMatrix(inputs[INPUT_NAME]), pred_contribs=True, iteration_range=self._iterations
        )
        if self._classes is None:
            classes = None
        multiclass = len(self._classes) if self._classes is not None and np.ndim(contribs) == 3 else 1
        return tree_contributions(contribs, classes, multiclass=multiclass)

    def _probabilities(self, x: Array) -> Array:
        if self.objective == "multi:softprob":
            return self._run(x)
        if self.objective == "multi:softmax":
            margin = self._run(x, margin=True)
            exp = np.exp(margin - margin.max(axis=1, keepdims=True))
            softmax: Array = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
            return softmax
        if self.objective == "binary:logitraw":
            p = (1.0 / (1.0 + np.exp(-self._run(x, margin=True).astype(np.float64)))).astype(np.float32)
        else:
            p = self._run(x)
        return np.column_stack([1 - p, p])

    def _run(self, x: Array, *, margin: bool = False) -> Array:
        # inplace_predict is XGBoost's thread-safe predict, and needs no DMatrix per call.
        result: Array = np.asarray(
            self.booster.inplace_predict(
                x,
                iteration_range=self._iterations,
                predict_type="margin" if margin else "value",
                validate_features=False,
            )
        )
        return result


def _first_line(err: Exception) -> str:
    """XGBoost's message without the native stack trace it appends."""
    text = str(err).split("Stack trace:")[0].strip()
    return " ".join(text.split())[:500]
