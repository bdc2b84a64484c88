"""LightGBM boosters saved as text (``Booster.save_model``, or ``LGBMModel.booster_.save_model``).

The text model is data, not code, so a digest is checked when pinned but not required. It is
parsed once in a child process first (``probe_load``): LightGBM's parser aborts the whole
process on a truncated or damaged tree instead of raising, which must not take the server down.

What the booster answers follows the objective in the file's header:

- ``multiclass`` / ``multiclassova``: ``probabilities`` [N, classes] as ``Booster.predict`` gives
  them, and ``label`` (the most probable class, as ``LGBMClassifier.predict``);
- ``binary``: probabilities [1 - p, p] and the label (1 when p > 0.5);
- anything else (``regression*``, ``huber``, ``poisson``, ``quantile``, ``cross_entropy``,
  ``lambdarank``...): ``prediction``, one value per row.

The file stores no class labels (``LGBMClassifier`` keeps its label encoder in Python), so a
classifier's classes are its indices, ``label`` an INT64; a feature schema whose
``output.classes`` lists one name per index names them instead (``label`` is then BYTES). Inputs
are FP64, the type LightGBM compares its (double) thresholds in.

Threads: one per predict call by default (``ROLLWISE_LIGHTGBM_THREADS``). LightGBM's default is
OpenMP's, every core the node has: for a one-row request that costs about 30 times the
single-threaded predict (thread start-up and hand-offs), and on a 2-core pod it fights the event
loop for the other core.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import lightgbm as lgb
import numpy as np
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
_PROBE = "import sys, lightgbm; lightgbm.Booster(model_file=sys.argv[1])"
_MULTICLASS = {"multiclass", "multiclassova"}

log = logging.getLogger("rollwise_serving.runtimes.lightgbm")


class _Logger:
    """LightGBM's native messages ([LightGBM] [Warning] ...) into our log instead of stdout."""

    def info(self, msg: str) -> None:
        log.debug("%s", msg.rstrip())

    def warning(self, msg: str) -> None:
        log.warning("%s", msg.rstrip())


class LightGBMRuntime:
    format: ClassVar[ModelFormat] = ModelFormat.LIGHTGBM
    batchable = True

    def __init__(self, path: Path, *, class_names: Sequence[str] | None = None) -> None:
        self.threads = threads_from_env("ROLLWISE_LIGHTGBM_THREADS")
        lgb.register_logger(_Logger())
        probe_load(path, _PROBE, "LightGBM text model (Booster.save_model)")
        try:
            self.booster = lgb.Booster(model_file=str(path))
        except lgb.basic.LightGBMError as err:
            raise ArtifactError(f"{path.name} is not a loadable LightGBM model: {err}") from err
        header = _header(path)
        self.objective = header.get("objective", "").split(" ")[0]
        self.inputs = [TensorSpec(INPUT_NAME, "FP64", (-1, self.booster.num_feature()))]
        if self.objective in _MULTICLASS or self.objective == "binary":
            count = int(header.get("num_class", "1")) if self.objective in _MULTICLASS else 2
            self._classes: Array | None = class_labels(class_names, count, self.format)
            self.classes: list[str] | None = [str(c) for c in self._classes]
            self.outputs = [label_spec(self._classes), TensorSpec("probabilities", "FP64", (-1, count))]
        else:
            if class_names is not None:
                raise ArtifactError(
                    f"the feature schema declares classes, but this LightGBM model's objective "
                    f"{self.objective or 'unknown'} is a regressor's; drop output.classes or serve a "
                    "classifier"
                )
            self._classes, self.classes = None, None
            self.outputs = [TensorSpec("prediction", "FP64", (-1,))]

    def prepare(self, inputs: Sequence[InferInput]) -> dict[str, Array]:
        tensor = single_input(self.inputs[0], inputs)
        check_shape(self.inputs[0], tensor)
        return {INPUT_NAME: declared_type(self.inputs[0], tensor)}

    def predict(self, inputs: Mapping[str, Array]) -> Prediction:
        value = np.asarray(self.booster.predict(inputs[INPUT_NAME], num_threads=self.threads))
        if self._classes is None:
            return Prediction({"prediction": value}, None, value)
        probabilities = value if value.ndim == 2 else np.column_stack([1 - value, value])
        labels, scores, index = classify(probabilities, self._classes)
        return Prediction({"label": labels, "probabilities": probabilities}, labels, scores, index)

    def contributions(
        self, inputs: Mapping[str, Array], classes: Array | None, baseline: Array | None
    ) -> Contributions | None:
        """TreeSHAP from LightGBM itself (``pred_contrib``), on the raw score, for ``explain``."""
        contribs = self.booster.predict(inputs[INPUT_NAME], pred_contrib=True, num_threads=self.threads)
        if self._classes is None:
            classes = None
        multiclass = len(self._classes) if self.objective in _MULTICLASS and self._classes is not None else 1
        return tree_contributions(np.asarray(contribs), classes, multiclass=multiclass)


def _header(path: Path) -> dict[str, str]:
    """The ``key=value`` lines before the first tree (objective, num_class, feature_names...)."""
    header: dict[str, str] = {}
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.startswith("Tree="):
                break
            key, sep, value = line.rstrip("\n").partition("=")
            if sep:
                header[key] = value
    return header
