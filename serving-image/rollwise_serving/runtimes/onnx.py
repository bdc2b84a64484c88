"""ONNX models through onnxruntime (CPU), float or INT8-quantized alike.

ONNX is data, not code, so a digest is checked when pinned but not required. Inputs are matched
by name (a one-input model accepts any name) and cast to the graph's element type; outputs are
the graph's tensor outputs (non-tensor ones, like skl2onnx's ZipMap, are not served: convert with
``zipmap=False``). For the metrics, a rank-1 integer or string output is read as the label and a
rank-2 float output as class probabilities (score = the top probability); with neither, a float
output is read as a regressor's value. One intra-op thread by default: small models lose time
to thread hand-offs, and the server's event loop wants the other core
(``ROLLWISE_ONNX_THREADS`` changes it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime as ort
from rollwise_contract.model import ModelFormat

from rollwise_serving.errors import ArtifactError, InputError
from rollwise_serving.protocol import InferInput
from rollwise_serving.runtimes import Array, Prediction, TensorSpec, check_shape, declared_type

_ONNX_TYPES: dict[str, tuple[str, np.dtype[Any]]] = {
    "tensor(float)": ("FP32", np.dtype(np.float32)),
    "tensor(double)": ("FP64", np.dtype(np.float64)),
    "tensor(float16)": ("FP16", np.dtype(np.float16)),
    "tensor(int64)": ("INT64", np.dtype(np.int64)),
    "tensor(int32)": ("INT32", np.dtype(np.int32)),
    "tensor(int16)": ("INT16", np.dtype(np.int16)),
    "tensor(int8)": ("INT8", np.dtype(np.int8)),
    "tensor(uint8)": ("UINT8", np.dtype(np.uint8)),
    "tensor(bool)": ("BOOL", np.dtype(np.bool_)),
    "tensor(string)": ("BYTES", np.dtype(object)),
}


def _dims(shape: Sequence[Any]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else -1 for d in shape)


class OnnxRuntime:
    format: ClassVar[ModelFormat] = ModelFormat.ONNX
    batchable = True

    def __init__(self, path: Path) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("ROLLWISE_ONNX_THREADS", "1"))
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:
            raise ArtifactError(f"{path.name} is not a loadable ONNX model: {err}") from err
        self.inputs = []
        for arg in self.session.get_inputs():
            if arg.type not in _ONNX_TYPES:
                raise ArtifactError(f"ONNX input {arg.name!r} has type {arg.type}, which is not served")
            datatype = _ONNX_TYPES[arg.type][0]
            shape = _dims(arg.shape)
            self.inputs.append(TensorSpec(arg.name, datatype, (-1, *shape[1:]) if shape else (-1,)))
        self.outputs = []
        for arg in self.session.get_outputs():
            if arg.type in _ONNX_TYPES:
                shape = _dims(arg.shape)
                self.outputs.append(
                    TensorSpec(arg.name, _ONNX_TYPES[arg.type][0], (-1, *shape[1:]) if shape else (-1,))
                )
        if not self.outputs:
            raise ArtifactError("the ONNX model has no tensor output (convert classifiers with zipmap=False)")
        self._output_names = [o.name for o in self.outputs]
        self._label = next(
            (o.name for o in self.outputs if len(o.shape) == 1 and o.datatype in {"INT64", "INT32", "BYTES"}),
            None,
        )
        self._proba = next(
            (o.name for o in self.outputs if len(o.shape) == 2 and o.datatype in {"FP32", "FP64"}), None
        )
        self._value = next((o.name for o in self.outputs if o.datatype in {"FP32", "FP64"}), None)
        # A classifier's labels are not in the graph's signature: an empty list means "classes
        # learnt from traffic" for the metrics (declare them in the feature schema to pin them).
        self.classes: list[str] | None = [] if self._label or self._proba else None

    def prepare(self, inputs: Sequence[InferInput]) -> dict[str, Array]:
        by_name = {i.name: i for i in inputs}
        if len(self.inputs) == 1 and len(inputs) == 1:
            by_name = {self.inputs[0].name: inputs[0]}
        missing = [s.name for s in self.inputs if s.name not in by_name]
        extra = sorted(set(by_name) - {s.name for s in self.inputs})
        if missing or extra:
            raise InputError(
                f"the model's inputs are {[s.name for s in self.inputs]}; missing {missing}, unknown {extra}"
            )
        prepared: dict[str, Array] = {}
        for spec in self.inputs:
            tensor = by_name[spec.name]
            check_shape(spec, tensor)
            prepared[spec.name] = declared_type(spec, tensor)
        return prepared

    def predict(self, inputs: Mapping[str, Array]) -> Prediction:
        results = self.session.run(self._output_names, dict(inputs))
        outputs = {name: np.asarray(value) for name, value in zip(self._output_names, results, strict=True)}
        labels = outputs[self._label] if self._label else None
        scores = None
        if self._proba is not None:
            probabilities = outputs[self._proba]
            if labels is None:
                labels = probabilities.argmax(axis=1)
            scores = probabilities.max(axis=1)
        elif self._value is not None and labels is None:
            scores = outputs[self._value].reshape(len(next(iter(outputs.values()))), -1)[:, 0]
        return Prediction(outputs, labels, scores)
