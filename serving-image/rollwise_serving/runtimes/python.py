"""A custom Python class: any pre- or post-processing, or a rule, as a model.

The artifact is a ``.py`` file defining a class (``Model`` unless ``--python-class`` says
otherwise) with ``predict(inputs: dict[str, numpy.ndarray]) -> dict[str, numpy.ndarray]`` and
optionally ``load(directory)``, called once with the file's directory (for weights beside it).
Loading executes the file, so it needs a pinned sha256 like pickles do. Optional class
attributes: ``inputs``/``outputs`` (lists of ``{"name", "datatype", "shape"}`` for metadata and
input checks), ``classes`` (bounds the metric's class label) and ``batchable = False`` for a
model that is not row-wise. Outputs named ``label`` and ``probabilities`` (or ``prediction``)
feed the prediction metrics as for scikit-learn.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from rollwise_contract.model import ModelFormat

from rollwise_serving.errors import ArtifactError, InputError
from rollwise_serving.protocol import InferInput
from rollwise_serving.runtimes import Array, Prediction, TensorSpec, check_shape, classify, declared_type


class PythonRuntime:
    format: ClassVar[ModelFormat] = ModelFormat.PYTHON

    def __init__(self, path: Path, class_name: str) -> None:
        module_name = "rollwise_user_model_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ArtifactError(f"{path.name} is not a Python file")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
            cls = getattr(module, class_name)
            self.model: Any = cls()
            if hasattr(self.model, "load"):
                self.model.load(path.parent)
        except AttributeError as err:
            raise ArtifactError(f"{path.name} defines no class {class_name!r}; set --python-class") from err
        except Exception as err:
            raise ArtifactError(f"loading {path.name} failed: {type(err).__name__}: {err}") from err
        if not callable(getattr(self.model, "predict", None)):
            raise ArtifactError(f"{class_name} in {path.name} has no predict(inputs) method")
        self.inputs = [
            TensorSpec(i["name"], i["datatype"], tuple(i["shape"])) for i in getattr(cls, "inputs", [])
        ]
        self.outputs = [
            TensorSpec(o["name"], o["datatype"], tuple(o["shape"])) for o in getattr(cls, "outputs", [])
        ]
        raw_classes = getattr(cls, "classes", None)
        self.classes: list[str] | None = [str(c) for c in raw_classes] if raw_classes else None
        self._classes = np.asarray(raw_classes) if raw_classes else None
        self.batchable = bool(getattr(cls, "batchable", True))

    def prepare(self, inputs: Sequence[InferInput]) -> dict[str, Array]:
        if self.inputs:
            names = {s.name for s in self.inputs}
            given = {i.name for i in inputs}
            if given != names:
                raise InputError(f"the model's inputs are {sorted(names)}; got {sorted(given)}")
            specs = {s.name: s for s in self.inputs}
            for tensor in inputs:
                check_shape(specs[tensor.name], tensor)
            return {i.name: declared_type(specs[i.name], i) for i in inputs}
        return {i.name: i.data for i in inputs}

    def predict(self, inputs: Mapping[str, Array]) -> Prediction:
        result = self.model.predict(dict(inputs))
        if not isinstance(result, Mapping):
            result = {"prediction": result}
        outputs = {str(k): np.asarray(v) for k, v in result.items()}
        labels = outputs.get("label")
        scores = None
        if "probabilities" in outputs and self._classes is not None:
            derived, scores, _ = classify(outputs["probabilities"], self._classes)
            labels = derived if labels is None else labels
        elif "prediction" in outputs and labels is None:
            scores = outputs["prediction"].reshape(len(outputs["prediction"]), -1)[:, 0]
        if not outputs:
            raise InputError("the model returned no outputs")
        return Prediction(outputs, labels, scores)
