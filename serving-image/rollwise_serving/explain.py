"""Explanations: how much each feature moved one answer, off unless ``--explain``.

``POST /v2/models/{name}/explain`` takes an infer request (JSON or binary tensors, one numeric
input of shape [rows, features], at most ``--explain-max-rows`` rows, checked like ``/infer``)
and answers, per row, the attributions of each feature to a *target*: the probability of the
row's predicted class (or of ``parameters.explain_class``) for a classifier, the value for a
regressor. Every method keeps the efficiency property: a row's attributions add up to
``value - base_value`` (the target at the row minus at the baseline), which the tests check.

- ``linear``: a bare scikit-learn linear model (``coef_``): attribution ``w_j (x_j - b_j)`` on
  the decision function (log-odds for logistic regression), exact (LinearSHAP with independent
  features). Its target is then ``decision_function``.
- ``exact_shapley``: any other model with at most 10 features: baseline Shapley values by
  enumerating all 2^F coalitions (feature j takes the row's value when in the coalition, the
  baseline's otherwise), exact for that game.
- ``sampled_shapley``: more features: random permutations (seeded by the request, so the same
  request gets the same answer), as many as ``--explain-max-evaluations`` allows, each giving
  attributions that add up exactly; ``stderr`` is each attribution's standard error over them.
- ``tree_shap``: XGBoost and LightGBM models, through the library's own TreeSHAP
  (``pred_contribs``): exact, on the margin (log-odds), from the model's expected margin (its
  ``base_value``) rather than a baseline row. A runtime that computes its own contributions
  (``Runtime.contributions``) is always used first, with the target it names.

The baseline is ``--explain-baseline`` or, with a feature schema and a reference, the reference's
per-feature medians (its decile cuts). Cost is bounded three ways: rows per call, model rows per
explanation, and ``--explain-timeout-ms`` (checked between chunks of model calls: 504 after). One
explanation runs at a time per process, in a worker thread, so inference keeps its event loop; a
second one meanwhile gets 429. Explained rows and the sum of each feature's absolute attribution
are exported (``rollwise_explained_rows_total``, ``rollwise_attribution_abs_total{feature}``), so
the mean absolute attribution per feature can be compared between stable and candidate.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import orjson

from rollwise_serving.config import Settings
from rollwise_serving.drift import Reference
from rollwise_serving.errors import BusyError, DeadlineError, InputError
from rollwise_serving.protocol import DATATYPES, InferRequest
from rollwise_serving.runtimes import Array, Contributions, Runtime

EXACT_MAX_FEATURES: Final = 10
"""Up to this many features every coalition is evaluated (1 024 per row); above, permutations."""
CHUNK_ROWS: Final = 4096
"""Model rows per call: the deadline is checked between calls."""
MIN_PERMUTATIONS: Final = 2


@dataclass(frozen=True, slots=True)
class Explanation:
    method: str
    target: str
    baseline: list[float] | None
    rows: list[dict[str, Any]]


class Explainer:
    """Answers explain requests for one model (see the module docstring)."""

    def __init__(
        self, settings: Settings, features: Sequence[str] | None, reference: Reference | None
    ) -> None:
        self.max_rows = settings.explain_max_rows
        self.max_evaluations = settings.explain_max_evaluations
        self.timeout = settings.explain_timeout_ms / 1000
        self.features = list(features) if features else None
        self.baseline = _baseline(settings.explain_baseline, self.features, reference)
        self._lock = asyncio.Lock()

    async def explain(
        self, runtime: Runtime, prepared: dict[str, Array], request: InferRequest
    ) -> Explanation:
        if self._lock.locked():
            raise BusyError("an explanation is already running in this process; retry in a moment")
        async with self._lock:
            return await asyncio.to_thread(self._explain, runtime, prepared, request)

    def _explain(self, runtime: Runtime, prepared: dict[str, Array], request: InferRequest) -> Explanation:
        name, x = _one_matrix(prepared)
        if len(x) > self.max_rows:
            raise InputError(f"explain takes at most {self.max_rows} rows (--explain-max-rows); got {len(x)}")
        deadline = time.monotonic() + self.timeout
        classes = runtime.classes
        targets = _targets(runtime, name, x, request, deadline)
        native = getattr(runtime, "contributions", None)
        baseline = self.baseline
        if baseline is not None and len(baseline) != x.shape[1]:
            raise InputError(
                f"the explain baseline has {len(baseline)} values but the input has {x.shape[1]} "
                "features; fix --explain-baseline"
            )
        found: Contributions | None = None
        if callable(native):
            found = native({name: x}, targets.index, None if baseline is None else np.asarray(baseline))
        if found is None:
            if baseline is None:
                raise InputError(
                    "no baseline to attribute from: start the server with --explain-baseline or with "
                    "--feature-schema and --reference (their medians are used)"
                )
            found = self._shapley(
                runtime, name, x, np.asarray(baseline, dtype=np.float64), targets=targets, deadline=deadline
            )
        rows = []
        for i in range(len(x)):
            row: dict[str, Any] = {
                "row": i,
                "value": float(found.values[i]),
                "base_value": float(found.base_values[i]),
                "attributions": found.attributions[i].tolist(),
            }
            if targets.index is not None:
                k = int(targets.index[i])
                row["class"] = classes[k] if classes else k
            if found.stderr is not None:
                row["stderr"] = found.stderr[i].tolist()
            rows.append(row)
        return Explanation(found.method, found.target, baseline if found.from_baseline else None, rows)

    def _shapley(
        self,
        runtime: Runtime,
        name: str,
        x: Array,
        baseline: Array,
        *,
        targets: _Targets,
        deadline: float,
    ) -> Contributions:
        width = x.shape[1]

        def value(z: Array, owners: Array) -> Array:
            return targets.value(_evaluate(runtime, name, z, deadline), owners)

        if width <= EXACT_MAX_FEATURES and len(x) << width <= self.max_evaluations:
            return _exact(x, baseline, value, targets.name)
        permutations = self.max_evaluations // (len(x) * (width + 1))
        if permutations < MIN_PERMUTATIONS:
            raise InputError(
                f"{len(x)} rows of {width} features need at least {MIN_PERMUTATIONS * len(x) * (width + 1)} "
                f"model rows, over --explain-max-evaluations ({self.max_evaluations}); send fewer rows"
            )
        seed = int.from_bytes(hashlib.sha256(x.tobytes()).digest()[:8], "little")
        return _sampled(
            x, baseline, value, targets.name, permutations=permutations, rng=np.random.default_rng(seed)
        )


@dataclass(frozen=True, slots=True)
class _Targets:
    name: str
    index: Array | None
    """Per row, the class whose probability is explained (None: a regressor's value)."""
    output: str

    def value(self, outputs: dict[str, Array], owners: Array) -> Array:
        """The target of each evaluated row; ``owners`` maps it to the explained row it serves."""
        out = np.asarray(outputs[self.output], dtype=np.float64)
        if self.index is None:
            return out.reshape(len(out))
        return out[np.arange(len(out)), self.index[owners]]


def _targets(runtime: Runtime, name: str, x: Array, request: InferRequest, deadline: float) -> _Targets:
    """What is explained: the predicted (or asked) class's probability, or the value. A class is
    asked by name when the model names its classes, else by its column in ``probabilities``."""
    outputs = _evaluate(runtime, name, x, deadline)
    wanted = (request.parameters or {}).get("explain_class")
    probabilities = outputs.get("probabilities")
    if probabilities is not None and np.asarray(probabilities).ndim == 2:
        columns = np.asarray(probabilities).shape[1]
        if wanted is None:
            index = np.asarray(probabilities).argmax(axis=1)
        else:
            index = np.full(len(x), _column(wanted, runtime.classes, columns))
        return _Targets("probability", index, "probabilities")
    if wanted is not None:
        raise InputError("parameters.explain_class needs a classifier answering probabilities")
    for key in ("prediction", "value"):
        if key in outputs and np.asarray(outputs[key]).dtype.kind in "biuf":
            return _Targets("prediction", None, key)
    raise InputError(
        "this model answers neither probabilities nor a numeric prediction, so there is nothing to "
        "attribute; explanations need one of them"
    )


def _column(wanted: Any, classes: Sequence[str] | None, columns: int) -> int:
    if classes:
        if str(wanted) not in classes:
            raise InputError(
                f"parameters.explain_class {wanted!r} is not a class; use one of {list(classes)}"
            )
        return list(classes).index(str(wanted))
    if type(wanted) is int and 0 <= wanted < columns:
        return wanted
    raise InputError(
        f"parameters.explain_class {wanted!r}: this model does not name its classes, so give the "
        f"column of its probabilities, an integer from 0 to {columns - 1}"
    )


def _evaluate(runtime: Runtime, name: str, z: Array, deadline: float) -> dict[str, Array]:
    """The model on ``z`` in bounded chunks, the deadline checked before each."""
    dtype = DATATYPES[runtime.inputs[0].datatype] if _typed(runtime) else None
    parts: list[dict[str, Array]] = []
    for start in range(0, len(z), CHUNK_ROWS):
        if time.monotonic() > deadline:
            raise DeadlineError("the explanation ran out of time (--explain-timeout-ms); send fewer rows")
        chunk = z[start : start + CHUNK_ROWS]
        parts.append(runtime.predict({name: chunk if dtype is None else chunk.astype(dtype)}).outputs)
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _typed(runtime: Runtime) -> bool:
    """Whether the model declares a float input type that evaluated rows must be cast to (ONNX
    graphs take exactly FP32 or FP64; the others take what they are given)."""
    return bool(runtime.inputs) and runtime.inputs[0].datatype in ("FP16", "FP32", "FP64")


def _exact(x: Array, baseline: Array, value: Callable[[Array, Array], Array], target: str) -> Contributions:
    """Baseline Shapley values over every coalition (bit j of a coalition: feature j is the row's)."""
    rows, width = x.shape
    coalitions = np.arange(1 << width)
    members = (coalitions[:, None] >> np.arange(width)) & 1  # [2^F, F]
    z = np.where(members[None, :, :] == 1, x[:, None, :], baseline[None, None, :]).reshape(-1, width)
    owners = np.repeat(np.arange(rows), 1 << width)
    v = value(z, owners).reshape(rows, 1 << width)
    size = members.sum(axis=1)
    weight = np.array(
        [math.factorial(s) * math.factorial(width - s - 1) / math.factorial(width) for s in range(width)]
    )
    attributions = np.zeros((rows, width))
    for j in range(width):
        without = coalitions[members[:, j] == 0]
        gain = v[:, without | (1 << j)] - v[:, without]
        attributions[:, j] = gain @ weight[size[without]]
    return Contributions("exact_shapley", target, attributions, v[:, -1], v[:, 0])


def _sampled(
    x: Array,
    baseline: Array,
    value: Callable[[Array, Array], Array],
    target: str,
    *,
    permutations: int,
    rng: np.random.Generator,
) -> Contributions:
    """Shapley values estimated over random feature orders: in each order the features switch from
    the baseline to the row's value one by one, each credited with the change it makes."""
    rows, width = x.shape
    orders = np.array([rng.permutation(width) for _ in range(permutations)])  # [P, F]
    # Step k of an order has its first k features switched: F + 1 points per order and row.
    switched = np.zeros((permutations, width + 1, width), dtype=bool)
    for k in range(1, width + 1):
        switched[np.arange(permutations)[:, None], k, orders[:, :k]] = True
    z = np.where(switched[None], x[:, None, None, :], baseline[None, None, None, :]).reshape(-1, width)
    owners = np.repeat(np.arange(rows), permutations * (width + 1))
    v = value(z, owners).reshape(rows, permutations, width + 1)
    gains = np.diff(v, axis=2)  # gains[r, p, k]: what feature orders[p, k] added
    per_feature = np.zeros((rows, permutations, width))
    per_feature[:, np.arange(permutations)[:, None], orders] = gains
    attributions = per_feature.mean(axis=1)
    stderr = per_feature.std(axis=1, ddof=1) / math.sqrt(permutations)
    return Contributions("sampled_shapley", target, attributions, v[:, 0, -1], v[:, 0, 0], stderr)


def _one_matrix(prepared: dict[str, Array]) -> tuple[str, Array]:
    if len(prepared) != 1:
        raise InputError("explanations need a model with one input of shape [rows, features]")
    name, x = next(iter(prepared.items()))
    if x.ndim != 2 or x.dtype.kind not in "biuf":
        raise InputError(
            f"explanations need one numeric input of shape [rows, features]; {name!r} is "
            f"{x.dtype.kind!r}-typed with shape {list(x.shape)}"
        )
    return name, x.astype(np.float64, copy=False)


def _baseline(
    text: str | None, features: Sequence[str] | None, reference: Reference | None
) -> list[float] | None:
    """``--explain-baseline``, else the reference's medians in the schema's feature order."""
    if text is not None:
        return [float(v) for v in json.loads(text)]
    if features is None or reference is None or not all(f in reference.features for f in features):
        return None
    return [_median(reference.features[f].cuts, reference.features[f].fractions) for f in features]


def _median(cuts: Sequence[float], fractions: Sequence[float]) -> float:
    """The value where the reference's cumulative share reaches one half (on its bin cuts)."""
    total = 0.0
    for cut, share in zip(cuts, fractions, strict=False):
        total += share
        if total >= 0.5:
            return float(cut)
    return float(cuts[-1])


def encode(model_name: str, model_version: str, features: Sequence[str] | None, found: Explanation) -> bytes:
    width = len(found.rows[0]["attributions"]) if found.rows else 0
    doc = {
        "model_name": model_name,
        "model_version": model_version,
        "method": found.method,
        "target": found.target,
        "features": list(features) if features else [f"x{i}" for i in range(width)],
        "baseline": found.baseline,
        "explanations": found.rows,
    }
    return orjson.dumps(doc)
