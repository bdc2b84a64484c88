"""scikit-learn estimators and pipelines saved with joblib or pickle.

Loading unpickles, i.e. runs code from the artifact: the repository verifies the pinned sha256
before this module ever sees the file. Classifiers with ``predict_proba`` answer ``label`` and
``probabilities`` from one call (label = ``classes_[argmax(probabilities)]``, which is what
``predict`` returns for the usual probabilistic classifiers; SVC-style models whose ``predict``
differs from their calibrated probabilities should be served without ``probability=True``).
Others answer ``label`` (classifiers) or ``prediction`` (regressors).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import joblib
import numpy as np
import sklearn
from rollwise_contract.model import ModelFormat
from sklearn.feature_extraction import DictVectorizer, FeatureHasher
from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer, TfidfVectorizer
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, TargetEncoder

from rollwise_serving.errors import ArtifactError, InputError
from rollwise_serving.protocol import InferInput, datatype_of
from rollwise_serving.runtimes import (
    Array,
    Contributions,
    Prediction,
    TensorSpec,
    check_shape,
    classify,
    single_input,
)

INPUT_NAME = "input-0"
_STRING_ENCODERS = (
    OneHotEncoder,
    OrdinalEncoder,
    TargetEncoder,
    CountVectorizer,
    TfidfVectorizer,
    HashingVectorizer,
    DictVectorizer,
    FeatureHasher,
)
"""scikit-learn steps whose inputs are categories or text, i.e. strings."""


class SklearnRuntime:
    format: ClassVar[ModelFormat] = ModelFormat.SKLEARN
    batchable = True

    def __init__(self, path: Path) -> None:
        # The protocol layer already refuses NaN and infinity, so scikit-learn's own scan of
        # every input for them is redundant work on every call (about 10 % of a small predict).
        sklearn.set_config(assume_finite=True)
        try:
            self.model: Any = joblib.load(path)
        except Exception as err:
            raise ArtifactError(
                f"{path.name} is not a joblib or pickle file scikit-learn can load "
                f"({type(err).__name__}: {err}); check --format, or save the model with joblib.dump"
            ) from err
        if not hasattr(self.model, "predict"):
            raise ArtifactError(f"{path.name} holds a {type(self.model).__name__}, which has no predict()")
        n_features = getattr(self.model, "n_features_in_", None)
        self.inputs = [TensorSpec(INPUT_NAME, "FP64", (-1, int(n_features) if n_features else -1))]
        raw_classes = getattr(self.model, "classes_", None)
        self._classes: Array | None = np.asarray(raw_classes) if raw_classes is not None else None
        self.classes = [str(c) for c in self._classes] if self._classes is not None else None
        self._proba = self._classes is not None and hasattr(self.model, "predict_proba")
        self._strings = _takes_strings(self.model)
        self._numbers_as_text = _fitted_on_strings(self.model)
        if self._classes is not None:
            label_type = "BYTES" if self._classes.dtype.kind in "OUS" else datatype_of(self._classes)
            self.outputs = [TensorSpec("label", label_type, (-1,))]
            if self._proba:
                self.outputs.append(TensorSpec("probabilities", "FP64", (-1, len(self._classes))))
        else:
            self.outputs = [TensorSpec("prediction", "FP64", (-1,))]

    def prepare(self, inputs: Sequence[InferInput]) -> dict[str, Array]:
        tensor = single_input(self.inputs[0], inputs)
        check_shape(self.inputs[0], tensor)
        if tensor.datatype == "BYTES":
            # Pipelines with encoders take strings; a bare estimator would fail on them mid-batch.
            if not self._strings:
                raise InputError(
                    f"input {tensor.name!r} is BYTES; this model takes numbers (FP32, FP64, INT*)"
                )
            return {INPUT_NAME: tensor.data}
        numbers = tensor.data.astype(np.float64, copy=False)
        if self._numbers_as_text:
            # A model fitted on strings fails on numbers inside predict (a 500 any client could
            # cause): it gets their decimal text, as the same request in BYTES would carry it.
            return {INPUT_NAME: numbers.astype(str).astype(object)}
        # One dtype for every request, so concurrent FP32 and FP64 requests share a batch.
        return {INPUT_NAME: numbers}

    def predict(self, inputs: Mapping[str, Array]) -> Prediction:
        x = inputs[INPUT_NAME]
        if self._proba and self._classes is not None:
            probabilities = np.asarray(self.model.predict_proba(x))
            labels, scores, index = classify(probabilities, self._classes)
            return Prediction({"label": labels, "probabilities": probabilities}, labels, scores, index)
        y = np.asarray(self.model.predict(x))
        if self._classes is not None:
            return Prediction({"label": y}, y, None)
        return Prediction({"prediction": y}, None, y)

    def contributions(
        self, inputs: Mapping[str, Array], classes: Array | None, baseline: Array | None
    ) -> Contributions | None:
        """Exact attributions of a bare linear model (``explain``): ``w_j (x_j - b_j)`` on its
        decision function, per row for that row's class; None for any other model (a pipeline's
        steps may not be linear), which is then explained model-agnostically."""
        model = self.model
        if (
            baseline is None
            or not type(model).__module__.startswith("sklearn.linear_model")
            or not hasattr(model, "coef_")
        ):
            return None
        x = np.asarray(inputs[INPUT_NAME], dtype=np.float64)
        coef = np.atleast_2d(np.asarray(model.coef_, dtype=np.float64))
        intercept = np.atleast_1d(np.asarray(model.intercept_, dtype=np.float64))
        if coef.shape[1] != x.shape[1]:
            return None
        if classes is None or coef.shape[0] > 1:
            rows = np.zeros(len(x), dtype=int) if classes is None else np.asarray(classes)
            w, b0 = coef[rows], intercept[rows]
        else:  # binary: one row of weights, for the second class; the first class's is its negative
            sign = np.where(np.asarray(classes) == 1, 1.0, -1.0)[:, None]
            w, b0 = sign * coef[0], sign[:, 0] * intercept[0]
        attributions = w * (x - baseline[None, :])
        base = (w * baseline[None, :]).sum(axis=1) + b0
        return Contributions(
            "linear", "decision_function", attributions, base + attributions.sum(axis=1), base
        )


def _encoders(model: Any) -> list[Any]:
    """The encoders in a model: itself, or the steps of its pipeline, column transformer (the
    fitted `transformers_` when there) or feature union, recursively."""
    if isinstance(model, _STRING_ENCODERS):
        return [model]
    transformers = "transformers_" if hasattr(model, "transformers_") else "transformers"
    found: list[Any] = []
    for attribute in ("steps", transformers, "transformer_list"):
        for entry in getattr(model, attribute, None) or []:
            if isinstance(entry, tuple) and len(entry) >= 2 and not isinstance(entry[1], str):
                found += _encoders(entry[1])  # (name, estimator[, columns])
    return found


def _takes_strings(model: Any) -> bool:
    """Whether strings are values for this model: it (or a step of its pipeline, column
    transformer or feature union) encodes categories or text. A numeric pipeline given strings
    would parse or fail on them inside predict, so it is refused BYTES (400) instead."""
    return bool(_encoders(model))


def _fitted_on_strings(model: Any) -> bool:
    """Whether an encoder of this model learned string categories (or reads text): numbers given
    to it would fail inside predict, so they are handed over as their decimal text instead. An
    encoder fitted on numbers keeps getting numbers."""
    for encoder in _encoders(model):
        if isinstance(encoder, CountVectorizer | TfidfVectorizer):
            return True
        for categories in getattr(encoder, "categories_", None) or []:
            if any(isinstance(c, str) for c in np.asarray(categories).ravel().tolist()):
                return True
    return False
