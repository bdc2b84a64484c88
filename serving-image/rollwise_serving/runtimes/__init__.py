"""Model formats: one module per format behind the small ``Runtime`` protocol.

A runtime turns checked input arrays into a ``Prediction``: the output tensors plus, for the
metrics, one label and one score per row. It also says what inputs it takes, so a request that
does not fit is refused (400) *before* it joins a micro-batch and cannot spoil its neighbours.
Runtimes are row-wise: output row ``i`` answers input row ``i``, which is what lets the
dataplane stack concurrent requests into one call and split the answer back.
"""

from __future__ import annotations

import os
import subprocess
import sys
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
    label_index: Array | None = None
    """Each row's ``label`` as its position in the runtime's ``classes``, where the runtime chose
    the label by that position: batch scoring writes labels from it without reading the text back."""


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
    from_baseline: bool = True
    """Whether the attributions are measured from the baseline (TreeSHAP's are from the model's
    expected margin over its training data instead)."""


def tree_contributions(contribs: Array, classes: Array | None, *, multiclass: int = 1) -> Contributions:
    """TreeSHAP values as gradient-boosting libraries compute them (``pred_contribs``: one column
    per feature, then the expected margin) for each row's class: exact, on the margin (log-odds
    for classifiers), and needing no baseline. ``multiclass``: classes per row in ``contribs``;
    a binary model's values are class 1's, negated for a row explained as class 0."""
    values = np.asarray(contribs, dtype=np.float64)
    rows = len(values)
    if multiclass > 1:
        values = values.reshape(rows, multiclass, -1)
        k = np.zeros(rows, dtype=int) if classes is None else np.asarray(classes, dtype=int)
        values = values[np.arange(rows), k]
    elif classes is not None:
        values = values * np.where(np.asarray(classes) == 1, 1.0, -1.0)[:, None]
    attributions, base = values[:, :-1], values[:, -1]
    return Contributions(
        "tree_shap", "margin", attributions, base + attributions.sum(axis=1), base, from_baseline=False
    )


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
    ModelFormat.XGBOOST: (".json", ".ubj"),
    ModelFormat.LIGHTGBM: (".txt",),
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


def load_runtime(
    fmt: ModelFormat,
    path: Path,
    *,
    python_class: str = "Model",
    class_names: Sequence[str] | None = None,
) -> Runtime:
    """Deserialise a verified artifact. Imports lazily: an ONNX image never imports sklearn, and
    the optional formats' libraries (extras ``xgboost``, ``lightgbm``) are needed only by images
    that serve them. ``class_names`` (the feature schema's declared classes) name the class
    indices of formats that store no labels of their own (XGBoost, LightGBM). A directory
    artifact is loaded from its entry file (``entry_file``), whose directory the model may read."""
    if path.is_dir():
        path = entry_file(path, fmt)
    try:
        if fmt is ModelFormat.SKLEARN:
            from rollwise_serving.runtimes.sklearn import SklearnRuntime  # noqa: PLC0415

            return SklearnRuntime(path)
        if fmt is ModelFormat.ONNX:
            from rollwise_serving.runtimes.onnx import OnnxRuntime  # noqa: PLC0415

            return OnnxRuntime(path)
        if fmt is ModelFormat.XGBOOST:
            from rollwise_serving.runtimes.xgboost import XGBoostRuntime  # noqa: PLC0415

            return XGBoostRuntime(path, class_names=class_names)
        if fmt is ModelFormat.LIGHTGBM:
            from rollwise_serving.runtimes.lightgbm import LightGBMRuntime  # noqa: PLC0415

            return LightGBMRuntime(path, class_names=class_names)
    except ModuleNotFoundError as err:
        if err.name not in OPTIONAL_LIBRARIES:
            raise
        extra = OPTIONAL_LIBRARIES[err.name]
        raise ArtifactError(
            f"--format {fmt} needs the {err.name} library, which this server lacks; install the "
            f"{extra!r} extra (pip install 'rollwise[serving,{extra}]') or run a serving image built with it"
        ) from err
    from rollwise_serving.runtimes.python import PythonRuntime  # noqa: PLC0415

    return PythonRuntime(path, python_class)


OPTIONAL_LIBRARIES = {"xgboost": "xgboost", "lightgbm": "lightgbm"}
"""Importable module -> the pyproject extra that installs it (the default image has neither)."""

PROBE_TIMEOUT_SECONDS = 300.0
"""How long a child process may take to load an artifact before it is refused (see ``probe_load``)."""


def probe_load(path: Path, code: str, what: str) -> None:
    """Load the artifact once in a child process before loading it here; raise ``ArtifactError``
    with the library's own complaint when that fails.

    Some native loaders do not survive every corrupt file: LightGBM's parser aborts the whole
    process on a truncated or damaged tree (``terminate called without an active exception``,
    lightgbm-org/LightGBM#2828 shows the message), and XGBoost can spin on a damaged UBJ length.
    A broken artifact must never take the server down or hang its loader, so a child takes the
    risk: it runs ``code`` with the path as ``sys.argv[1]``, one OpenMP thread, and a deadline.
    The cost is one more load (a library import plus parsing) at start-up, never per request."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run(  # our own interpreter and code; the path is an argument
            [sys.executable, "-c", code, str(path)],
            capture_output=True,
            text=True,
            errors="replace",
            env=env,
            timeout=PROBE_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise ArtifactError(
            f"{path.name} is not a loadable {what}: loading it took over {PROBE_TIMEOUT_SECONDS:.0f} s"
        ) from err
    if done.returncode == 0:
        return
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    # The native library's first fatal message is the cause; else the Python exception's line.
    fatal = [line for line in lines if "[Fatal]" in line][:1]
    detail = (fatal or [line for line in lines if "Error" in line] or lines or ["no message"])[-1][:500]
    if done.returncode < 0:
        detail = f"the library crashed (signal {-done.returncode}) parsing it: {detail}"
    raise ArtifactError(f"{path.name} is not a loadable {what}: {detail}")


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


def classify(probabilities: Array, classes: Array) -> tuple[Array, Array, Array]:
    """(label, score, index in ``classes``) per row: the most probable class and its probability."""
    index = probabilities.argmax(axis=1)
    return classes[index], probabilities[np.arange(len(index)), index], index


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


def threads_from_env(variable: str) -> int:
    """The thread count a tree library may use per predict call, from ``variable`` (default 1)."""
    text = os.environ.get(variable, "1")
    try:
        threads = int(text)
    except ValueError:
        threads = 0
    if not 1 <= threads <= 256:
        raise ArtifactError(f"{variable}={text!r} is not a thread count; use an integer from 1 to 256")
    return threads


def class_labels(names: Sequence[str] | None, count: int, fmt: ModelFormat) -> Array:
    """The labels of a model that stores none, by class index: the declared names when given (one
    per index, in index order), else the indices themselves (which the metrics show as "0", "1"...)."""
    if names is None:
        return np.arange(count, dtype=np.int64)
    if len(names) != count:
        raise ArtifactError(
            f"the feature schema's output.classes names {len(names)} classes ({list(names)[:5]}); this "
            f"{fmt} model has {count}: list one name per class index, in index order"
        )
    return np.asarray(list(names), dtype=object)


def label_spec(labels: Array) -> TensorSpec:
    return TensorSpec("label", "BYTES" if labels.dtype.kind == "O" else "INT64", (-1,))
