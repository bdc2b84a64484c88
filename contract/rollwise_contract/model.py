"""Model formats and tracks: how an artifact is loaded, and which side of a rollout a pod is on."""

from __future__ import annotations

from enum import StrEnum


class ModelFormat(StrEnum):
    """How the serving image loads the artifact."""

    SKLEARN = "sklearn"
    """A scikit-learn estimator saved with joblib (pickle: needs a sha256 digest)."""
    ONNX = "onnx"
    """An ONNX graph run by onnxruntime."""
    PYTHON = "python"
    """A Python file defining a model with a `predict` method (it runs code: needs a sha256 digest)."""
    XGBOOST = "xgboost"
    """An XGBoost booster saved as JSON or UBJ (`save_model`, native or scikit-learn API); needs a
    serving image with the `xgboost` extra."""
    LIGHTGBM = "lightgbm"
    """A LightGBM booster saved as text (`Booster.save_model`); needs a serving image with the
    `lightgbm` extra."""


PICKLE_FORMATS = frozenset({ModelFormat.SKLEARN, ModelFormat.PYTHON})
"""Formats whose loading runs code from the artifact, so they load only with a pinned digest. ONNX,
XGBoost (JSON/UBJ) and LightGBM (text) artifacts are data: a digest is checked when pinned."""


class Track(StrEnum):
    """The two sides of a rollout; "canary" is a strategy, never a track. It appears in object
    names, pod labels, the server's `--track` flag and the `track` metric label alike."""

    STABLE = "stable"
    CANDIDATE = "candidate"
