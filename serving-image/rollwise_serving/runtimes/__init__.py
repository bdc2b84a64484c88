"""Model formats: one module per format behind the small ``Runtime`` protocol.

A runtime turns checked input arrays into a ``Prediction``: the output tensors plus, for the
metrics, one label and one score per row. It also says what inputs it takes, so a request that
does not fit is refused (400) *before* it joins a micro-batch and cannot spoil its neighbours.
Runtimes are row-wise: output row ``i`` answers input row ``i``, which is what lets the
dataplane stack concurrent requests into one call and split the answer back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from rollwise_contract.model import ModelFormat

from rollwise_serving.errors import ArtifactError, InputError
from rollwise_serving.protocol import DATATYPES, InferInput

Array = np.ndarray[Any, Any]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]
    """-1 for a dimension of any size (the batch dimension is always -1)."""

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True, slots=True)
class Prediction:
    outputs: dict[str, Array]
    labels: Array | None = None
    """Predicted class per row (classifiers), for ``rollwise_prediction_value{class}``."""
    scores: Array | None = None
    """Score per row: the predicted class's probability, or a regressor's value."""


@dataclass(frozen=True, slots=True)
class Contributions:
    """Per-feature attributions of rows to a target (``explain``): each row's attributions add up
    to ``values - base_values``."""

    method: str
    target: str
    attributions: Array
    """[rows, features]"""
    values: Array
    """The target at each row."""
    base_values: Array
    """The target at the baseline (or the model's expected value, for TreeSHAP)."""
    stderr: Array | None = None
    """[rows, features] standard errors, for sampled methods."""


class Runtime(Protocol):
    format: ClassVar[ModelFormat]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    classes: list[str] | None
    """Class labels of a classifier (empty: a classifier whose labels are unknown); None: regressor."""
    batchable: bool

    def prepare(self, inputs: Sequence[InferInput]) -> dict[str, Array]:
        """Check tensors against the model's inputs and cast them; raise ``InputError``."""
        ...

    def predict(self, inputs: Mapping[str, Array]) -> Prediction: ...


ENTRY_SUFFIXES: dict[ModelFormat, tuple[str, ...]] = {
    ModelFormat.SKLEARN: (".joblib", ".pkl", ".pickle"),
    ModelFormat.ONNX: (".onnx",),
    ModelFormat.PYTHON: (".py",),
}
"""The file a directory artifact is loaded from, by format: the one file at its root with one of
these suffixes (the rest of the directory is the model's: weights, vocabularies, external data)."""


def entry_file(root: Path, fmt: ModelFormat) -> Path:
    suffixes = ENTRY_SUFFIXES.get(fmt, ())
    found = sorted(p for p in root.iterdir() if p.is_file() and p.name.lower().endswith(suffixes))
    if len(found) != 1:
        names = [p.name for p in found]
        raise ArtifactError(
            f"a {fmt} directory artifact needs exactly one {' or '.join(suffixes)} file at its root; "
            f"found {len(found)}: {names}"
        )
    return found[0]


def load_runtime(fmt: ModelFormat, path: Path, *, python_class: str = "Model") -> Runtime:
    """Deserialise a verified artifact (a file, or a directory artifact's entry file, whose
    directory the model may read). Imports lazily: an ONNX image never imports sklearn."""
    if path.is_dir():
        path = entry_file(path, fmt)
    if fmt is ModelFormat.SKLEARN:
        from rollwise_serving.runtimes.sklearn import SklearnRuntime  # noqa: PLC0415

        return SklearnRuntime(path)
    if fmt is ModelFormat.ONNX:
        from rollwise_serving.runtimes.onnx import OnnxRuntime  # noqa: PLC0415

        return OnnxRuntime(path)
    from rollwise_serving.runtimes.python import PythonRuntime  # noqa: PLC0415

    return PythonRuntime(path, python_class)


def single_input(spec: TensorSpec, inputs: Sequence[InferInput]) -> InferInput:
    """Models with one input accept it under any name (clients often send ``input-0``)."""
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise InputError(
            f"the model takes one input ({spec.name!r}, shape {list(spec.shape)}); got {len(inputs)}: {names}"
        )
    return inputs[0]


def check_shape(spec: TensorSpec, tensor: InferInput) -> None:
    shape = tensor.shape
    if len(shape) != len(spec.shape) or any(
        want not in (-1, got) for want, got in zip(spec.shape, shape, strict=True)
    ):
        want = ["N" if d == -1 else d for d in spec.shape]
        raise InputError(f"input {tensor.name!r} has shape {list(shape)}; the model expects {want}")
    if shape[0] == 0:
        raise InputError(f"input {tensor.name!r} has no rows; send at least one")


def classify(probabilities: Array, classes: Array) -> tuple[Array, Array]:
    """(label, score) per row: the most probable class and its probability."""
    index = probabilities.argmax(axis=1)
    return classes[index], probabilities[np.arange(len(index)), index]


def cast_checked(tensor: InferInput, spec: TensorSpec, want: np.dtype[Any]) -> Array:
    """The tensor in the model's dtype; a value finite in the request but not in that dtype (FP64
    1e300 for an FP32 input) is refused here, before the model would answer it with NaN."""
    with np.errstate(over="ignore", invalid="ignore"):
        cast = tensor.data.astype(want, copy=False)
    if want.kind == "f" and tensor.data.dtype.kind in "fiu" and not np.isfinite(cast).all():
        limit = float(np.finfo(want).max)
        raise InputError(
            f"input {tensor.name!r} holds a value beyond {spec.datatype}'s range (about ±{limit:.3g}), "
            f"which this model takes; send values within it"
        )
    return cast


def declared_type(spec: TensorSpec, tensor: InferInput) -> Array:
    """A tensor as the input the model declares: strings only where it takes strings, numbers cast
    to its numeric type (so a declared FP64 input never receives text it would fail on)."""
    if spec.datatype not in DATATYPES:
        return tensor.data
    if (spec.datatype == "BYTES") != (tensor.datatype == "BYTES") or (spec.datatype == "BOOL") != (
        tensor.datatype == "BOOL"
    ):
        raise InputError(f"input {tensor.name!r} is {tensor.datatype}; the model takes {spec.datatype}")
    if spec.datatype == "BYTES":
        return tensor.data
    return cast_checked(tensor, spec, DATATYPES[spec.datatype])
