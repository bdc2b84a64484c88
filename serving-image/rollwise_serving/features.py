"""The declared feature schema: what valid input looks like, and every way an input can miss it.

A schema file ships with the model, or the operator passes one inline. Its shape is
``rollwise_contract.features.FeatureSchema``, declared once for the operator's API and this server:
the features in model-column order (type, range, required, allowed values) and what the model
outputs (classes or score buckets). This module only checks inputs against it: from it we build
a pydantic model for the named-feature route, so one request reports *every* offending field in
one 422, and a vectorised check for the tensor route, so strictness costs microseconds. Each
problem is classified as ``missing``, ``out_of_range`` or ``rejected`` — the ``problem`` label of
``rollwise_data_quality_total``.

Schema format (JSON)::

    {"features": [
        {"name": "sepal_length", "type": "float", "min": 4.0, "max": 8.5},
        {"name": "colour", "type": "category", "values": ["red", "blue"], "required": false},
        {"name": "count", "type": "int", "min": 0}, {"name": "member", "type": "bool"}],
     "output": {"kind": "classifier", "classes": ["setosa", "versicolor", "virginica"]}}

Categories reach the model as the index of the value in ``values``; booleans as 0/1; an optional
feature left out becomes its ``default`` or NaN (the model must then handle NaN).

Segments (``"segments": [{"feature": "country", "maxValues": 5}, {"feature": "age", "bins": [18,
65]}]``): every checked row also gets, per declared segment, the index of its value in
``Segment.values()`` (``SegmentCoder``), one byte, which the metrics, the feedback store and the
shadow comparison count by. ``Segment.value_of`` is the one definition of a row's value; the coder
is its vectorised form (a table built from ``value_of`` for categories and bools, ``searchsorted``
for bins, which a test holds equal to ``value_of``).
"""

from __future__ import annotations

import bisect
import functools
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pydantic
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from rollwise_contract.base import describe_errors
from rollwise_contract.features import MISSING_SEGMENT, Feature, FeatureSchema, FeatureType, Segment
from rollwise_contract.metrics import Problem


class SchemaError(ValueError):
    """The schema file itself is wrong; the message says where and how."""


@dataclass(frozen=True, slots=True)
class FeatureProblem:
    loc: str
    feature: str
    problem: Problem
    message: str


class FeatureValidationError(ValueError):
    """Input broke the schema: every problem found, for one 422 body."""

    def __init__(self, problems: Sequence[FeatureProblem]) -> None:
        self.problems = list(problems)
        super().__init__(
            f"{len(self.problems)} invalid feature value(s): " + "; ".join(p.message for p in problems[:5])
        )


_PROBLEM_OF_PYDANTIC = {
    "missing": Problem.MISSING,
    "greater_than_equal": Problem.OUT_OF_RANGE,
    "less_than_equal": Problem.OUT_OF_RANGE,
    "literal_error": Problem.OUT_OF_RANGE,
}


class SchemaChecker:
    """Checks inputs against a declared schema: a pydantic model of one named-feature row, plus
    vectorised bounds for tensors."""

    def __init__(self, declared: FeatureSchema) -> None:
        self.declared = declared
        self.features = declared.features
        self.names = tuple(f.name for f in declared.features)
        self.output = declared.output
        self.lower = np.array([-np.inf if f.min is None else f.min for f in declared.features])
        self.upper = np.array([np.inf if f.max is None else f.max for f in declared.features])
        for i, f in enumerate(declared.features):
            if f.type is FeatureType.CATEGORY and f.values:
                self.lower[i], self.upper[i] = 0, len(f.values) - 1
            elif f.type is FeatureType.BOOL:
                self.lower[i], self.upper[i] = 0, 1
        self._integral = np.array([f.type is not FeatureType.FLOAT for f in declared.features])
        self.segments = SegmentCoder(declared) if declared.segments else None

    @functools.cached_property
    def _instances(self) -> pydantic.TypeAdapter[list[BaseModel]]:
        """The named-feature rows' validator, built on first use: a batch shard or a tensor-only
        client never needs it, and building the pydantic model is most of a checker's set-up."""
        instance = _instance_model(self.features)
        return pydantic.TypeAdapter(list[instance])  # type: ignore[valid-type]  # dynamic model

    @classmethod
    def load(cls, source: str) -> SchemaChecker:
        """From a path or inline JSON (a value starting with ``{``).

        Raises ``SchemaError`` listing every problem, each with its field path and fix, e.g.
        ``--feature-schema: features[0].min: must not exceed max; swap or fix the bounds``.
        """
        text = source if source.lstrip().startswith("{") else _read(source, "--feature-schema")
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise SchemaError(f"--feature-schema: not valid JSON ({err})") from err
        try:
            return cls(FeatureSchema.model_validate(raw))
        except pydantic.ValidationError as err:
            raise SchemaError(f"--feature-schema: {'; '.join(describe_errors(err))}") from err

    def matrix_from_instances(self, instances: Any) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Validate named-feature rows and return the model's ``[N, F]`` float64 matrix."""
        if not isinstance(instances, list) or not instances:
            raise FeatureValidationError(
                [
                    FeatureProblem(
                        "instances", "", Problem.REJECTED, 'send "instances": a non-empty list of objects'
                    )
                ]
            )
        try:
            rows = self._instances.validate_python(instances)
        except pydantic.ValidationError as err:
            problems = []
            for e in err.errors(include_url=False):
                loc = e["loc"]
                feature = str(loc[1]) if len(loc) > 1 else ""
                problem = _PROBLEM_OF_PYDANTIC.get(e["type"], Problem.REJECTED)
                where = f"instances[{loc[0]}]" + (f".{feature}" if feature else "")
                value = "" if problem is Problem.MISSING else f" (got {e.get('input')!r})"
                problems.append(FeatureProblem(where, feature, problem, f"{where}: {e['msg']}{value}"))
            raise FeatureValidationError(problems) from err
        matrix = np.empty((len(rows), len(self.features)), dtype=np.float64)
        for r, row in enumerate(rows):
            values = row.__dict__
            for c, f in enumerate(self.features):
                v = values[f.name]
                if v is None:
                    matrix[r, c] = np.nan if f.default is None else f.default
                elif f.type is FeatureType.CATEGORY:
                    matrix[r, c] = f.values.index(v) if f.values else np.nan
                else:
                    matrix[r, c] = float(v)
        return matrix

    def matrix_from_strings(
        self, name: str, tensor: np.ndarray[Any, Any]
    ) -> np.ndarray[Any, np.dtype[np.float64]]:
        """A BYTES tensor ``[N, F]`` read as the declared features (numbers parsed, a category by
        its value, a bool as true/false/1/0), so strings get exactly the checks numbers get; every
        value that is none of these is a problem, never something the model sees."""
        self._check_columns(name, tensor)
        matrix = np.empty(tensor.shape, dtype=np.float64)
        problems: list[FeatureProblem] = []
        for (r, c), text in np.ndenumerate(tensor):
            f = self.features[c]
            value = _parse(f, str(text))
            if value is None:
                where = f"{name}[{r}][{c}] ({f.name})"
                problems.append(
                    FeatureProblem(
                        where, f.name, Problem.REJECTED, f"{where}: {str(text)[:40]!r} {_expected(f)}"
                    )
                )
                if len(problems) >= 100:
                    break
                continue
            matrix[r, c] = value
        if problems:
            raise FeatureValidationError(problems)
        return matrix

    def missing_counts(self, matrix: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Per feature, how many rows left an optional feature out (NaN after decoding)."""
        counts: np.ndarray[Any, np.dtype[np.int64]] = np.isnan(matrix).sum(axis=0).astype(np.int64)
        return counts

    def _check_columns(self, name: str, tensor: np.ndarray[Any, Any]) -> None:
        """A tensor ``[N, F]`` with one column per declared feature, or the problem saying so."""
        if tensor.ndim != 2 or tensor.shape[1] != len(self.features):
            raise FeatureValidationError(
                [
                    FeatureProblem(
                        name,
                        "",
                        Problem.REJECTED,
                        f"input {name!r} has shape {list(tensor.shape)}; the feature schema declares "
                        f"{len(self.features)} columns ({', '.join(self.names)}): "
                        f"send shape [N, {len(self.features)}]",
                    )
                ]
            )

    def check_matrix(self, name: str, matrix: np.ndarray[Any, Any]) -> None:
        """Vectorised range/type check of a tensor whose columns are the declared features."""
        self._check_columns(name, matrix)
        problems = []
        for _, problem in self._range_problems(name, matrix.astype(np.float64, copy=False)):
            problems.append(problem)
            if len(problems) >= 100:  # enough to act on; the body stays small
                break
        if problems:
            raise FeatureValidationError(problems)

    def _range_problems(
        self, name: str, values: np.ndarray[Any, np.dtype[np.float64]], first_row: int = 0
    ) -> Iterator[tuple[int, FeatureProblem]]:
        """(row, problem) for each value outside its bounds or not whole where it must be, row by
        row; NaN (an optional feature left out) is no problem here."""
        with np.errstate(invalid="ignore"):
            low = values < self.lower
            high = values > self.upper
            bad = low | high
            if self._integral.any():  # float features only: no fractions to look for
                fraction = self._integral & (values != np.floor(values)) & np.isfinite(values)
                bad |= fraction
            else:
                fraction = np.zeros_like(bad)
        if not bad.any():
            return
        for r, c in zip(*np.nonzero(bad), strict=True):
            f = self.features[c]
            v = values[r, c]
            where = _where(name, first_row + int(r), c, f)
            if fraction[r, c]:
                yield (
                    int(r),
                    FeatureProblem(
                        where, f.name, Problem.REJECTED, f"{where}: {v:.6g} is not a whole number"
                    ),
                )
            else:
                yield (
                    int(r),
                    FeatureProblem(
                        where,
                        f.name,
                        Problem.OUT_OF_RANGE,
                        f"{where}: {v:.6g} is outside [{self.lower[c]:g}, {self.upper[c]:g}]",
                    ),
                )

    def check_rows(
        self, columns: Mapping[str, np.ndarray[Any, Any]], rows: int, name: str = "rows", first_row: int = 0
    ) -> tuple[np.ndarray[Any, np.dtype[np.float64]], dict[int, list[FeatureProblem]]]:
        """Named columns of a table (batch scoring) -> the model's ``[N, F]`` matrix and, for each
        row that breaks the schema, every problem it has; the caller sets those rows aside.

        The same rules and messages as a request (``check_matrix``, ``matrix_from_strings``), row
        by row instead of all-or-nothing: a null or NaN is the feature left out (its ``default``
        or NaN when optional, a ``missing`` problem when required), strings are read as the
        feature's values (``_parse``), infinities are refused. ``first_row`` numbers the rows in
        messages (``rows[1234][2] (petal_length): 9.1 is outside [0.5, 8]``; with ``name`` empty,
        ``petal_length: 9.1 is outside [0.5, 8]``). A declared feature
        absent from ``columns`` is a left-out optional feature, or missing in every row."""
        matrix = np.empty((rows, len(self.features)), dtype=np.float64)
        decoded = []
        for c, f in enumerate(self.features):
            column = columns.get(f.name)
            values = np.full(rows, np.nan) if column is None else _column_values(f, column)
            matrix[:, c] = values
            decoded.append(values)
        if all(self._all_valid(c, values) for c, values in enumerate(decoded)):
            return matrix, {}  # what the row by row checks find in such columns: nothing
        return matrix, self._row_problems(columns, decoded, matrix, name, first_row)

    def _row_problems(
        self,
        columns: Mapping[str, np.ndarray[Any, Any]],
        decoded: Sequence[np.ndarray[Any, np.dtype[np.float64]]],
        matrix: np.ndarray[Any, np.dtype[np.float64]],
        name: str,
        first_row: int,
    ) -> dict[int, list[FeatureProblem]]:
        """``check_rows``' problems, row by row; a left-out optional feature's ``default`` is put
        into ``matrix``."""
        problems: dict[int, list[FeatureProblem]] = {}

        def add(r: int, problem: FeatureProblem) -> None:
            problems.setdefault(r, []).append(problem)

        for c, f in enumerate(self.features):
            column = columns.get(f.name)
            values = decoded[c]
            unparsed = np.isinf(values)  # _column_values marks what is no value of the feature as inf
            for r in np.nonzero(unparsed)[0]:
                where = _where(name, first_row + int(r), c, f)
                shown = "inf" if column is None else str(column[r])[:40]
                add(
                    int(r),
                    FeatureProblem(where, f.name, Problem.REJECTED, f"{where}: {shown!r} {_expected(f)}"),
                )
            missing = np.isnan(values)
            if missing.any():
                if f.required:
                    for r in np.nonzero(missing)[0]:
                        where = _where(name, first_row + int(r), c, f)
                        message = f"{where}: missing; this feature is required"
                        add(int(r), FeatureProblem(where, f.name, Problem.MISSING, message))
                elif f.default is not None:
                    values = np.where(missing, f.default, values)
            matrix[:, c] = values
        unparsed_any = bool(problems)
        checked = np.where(np.isinf(matrix), np.nan, matrix) if unparsed_any else matrix
        for row, problem in self._range_problems(name, checked, first_row):
            add(row, problem)
        return problems

    def _all_valid(self, c: int, values: np.ndarray[Any, np.dtype[np.float64]]) -> bool:
        """Whether feature ``c``'s decoded column has no problem at all: every value finite (no
        left-out or unparsed one), within the bounds, whole where it must be. Two reductions (a
        NaN or an infinity carries into the minimum or maximum) instead of a mask per check: rows
        without problems, the common case, cost a few nanoseconds a value."""
        if not len(values):
            return True
        low, high = float(values.min()), float(values.max())
        if not (math.isfinite(low) and math.isfinite(high)):
            return False
        if low < self.lower[c] or high > self.upper[c]:
            return False
        return not self._integral[c] or bool((np.floor(values) == values).all())


def _where(name: str, row: int, column: int, feature: Feature) -> str:
    """A value's place in messages: ``rows[12][1] (sepal_width)`` as a request's, or the feature
    alone without ``name`` (rows with no number of their own, as a Spark batch's)."""
    return f"{name}[{row}][{column}] ({feature.name})" if name else feature.name


def _column_values(feature: Feature, column: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
    """A column as the feature's model values: NaN where it is null (left out), +inf where it
    holds something that is no value of the feature (text that is no number, an unknown category,
    an infinity), so ``check_rows`` can tell the two apart."""
    if column.dtype.kind in "biuf":
        values: np.ndarray[Any, np.dtype[np.float64]] = column.astype(np.float64, copy=False)
        return values  # an infinity (either sign) is already one
    out = np.empty(len(column), dtype=np.float64)
    for r, item in enumerate(column.tolist()):
        if item is None or (isinstance(item, float) and math.isnan(item)):
            out[r] = np.nan
        elif isinstance(item, bool | int | float) and feature.type is not FeatureType.CATEGORY:
            out[r] = float(item) if math.isfinite(float(item)) else np.inf
        else:
            value = _parse(feature, str(item))
            out[r] = np.inf if value is None else value
    return out


@dataclass(frozen=True, slots=True)
class _SegmentColumn:
    feature: str
    column: int
    values: tuple[str, ...]
    missing: int
    """Index of ``missing`` in ``values``."""
    bins: np.ndarray[Any, np.dtype[np.float64]] | None
    table: np.ndarray[Any, np.dtype[np.uint8]] | None
    """Code by model value 0..n-1 (a category's index, a bool's 0/1), then the code of anything past."""
    cuts: list[float] | None = None
    """``bins`` as a list, and ``table`` as ``codes``, for the plain-Python path."""
    codes: list[int] = field(default_factory=list)


SMALL_REQUEST_ROWS = 8
"""Requests of at most this many rows are coded in plain Python (see ``SegmentCoder.codes``)."""


class SegmentCoder:
    """Each checked row's value index per declared segment, vectorised (see the module docstring).

    Codes are uint8 (at most ``MAX_SEGMENT_VALUES`` values), ``[N, S]``: a byte per segment per
    row is what the feedback store keeps."""

    def __init__(self, declared: FeatureSchema) -> None:
        columns = {f.name: i for i, f in enumerate(declared.features)}
        self.columns: list[_SegmentColumn] = []
        for segment in declared.segments:
            feature = declared.features[columns[segment.feature]]
            self.columns.append(_column(segment, feature, columns[segment.feature]))
        self.names = tuple(c.feature for c in self.columns)
        self.values = tuple(c.values for c in self.columns)

    def codes(self, matrix: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.uint8]]:
        """``[N, S]`` value indices of a checked ``[N, F]`` matrix (NaN: ``missing``). A few rows
        go through plain Python (``bisect``, a list look-up), which is several times cheaper than
        numpy's per-call overhead on tiny arrays; more go through numpy."""
        if len(matrix) <= SMALL_REQUEST_ROWS:
            return self._codes_of_few(matrix)
        out = np.empty((matrix.shape[0], len(self.columns)), dtype=np.uint8)
        for s, c in enumerate(self.columns):
            x = matrix[:, c.column].astype(np.float64, copy=False)
            nan = np.isnan(x)
            code: np.ndarray[Any, Any]
            if c.bins is not None:
                code = np.searchsorted(c.bins, x, side="right")  # how many cuts are <= x
            else:
                assert c.table is not None
                past = len(c.table) - 1
                index = np.where(nan | (x < 0) | (x >= past), past, np.nan_to_num(x)).astype(np.intp)
                code = c.table[index]
            out[:, s] = np.where(nan, c.missing, code)
        return out

    def _codes_of_few(self, matrix: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.uint8]]:
        rows = matrix.tolist()
        out = []
        for c in self.columns:
            column = []
            for row in rows:
                x = float(row[c.column])
                if x != x:  # NaN  # noqa: PLR0124 - the cheapest NaN test
                    column.append(c.missing)
                elif c.cuts is not None:
                    column.append(bisect.bisect_right(c.cuts, x))
                else:
                    past = len(c.codes) - 1
                    column.append(c.codes[int(x) if 0 <= x < past else past])
            out.append(column)
        return np.array(out, dtype=np.uint8).T.reshape(len(rows), len(self.columns))


def _column(segment: Segment, feature: Feature, column: int) -> _SegmentColumn:
    values = segment.values(feature)
    missing = values.index(MISSING_SEGMENT)
    if segment.bins:
        bins = np.asarray(segment.bins, np.float64)
        return _SegmentColumn(feature.name, column, values, missing, bins, None, bins.tolist())
    n = 2 if feature.type is FeatureType.BOOL else len(feature.values or ())
    # value_of decides every code; a value past the declared ones (never after check_matrix) is
    # whatever value_of calls it, or missing if that is no value of the segment.
    named = [segment.value_of(feature, float(i)) for i in range(n + 1)]
    table = np.array([values.index(v) if v in values else missing for v in named], dtype=np.uint8)
    return _SegmentColumn(feature.name, column, values, missing, None, table, None, table.tolist())


_BOOLS = {"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0}


def _parse(feature: Feature, text: str) -> float | None:
    """One string as the feature's model value, or None when it is not one (NaN and infinity are
    never values: a finite number is what every model here is trained on)."""
    if feature.type is FeatureType.CATEGORY:
        return float(feature.values.index(text)) if feature.values and text in feature.values else None
    if feature.type is FeatureType.BOOL:
        return _BOOLS.get(text.strip().lower())
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _expected(feature: Feature) -> str:
    if feature.type is FeatureType.CATEGORY:
        return f"is not one of {', '.join(feature.values or ())}"
    if feature.type is FeatureType.BOOL:
        return "is not a bool; send true, false, 1 or 0"
    return "is not a finite number; send a number"


def _instance_model(features: Sequence[Feature]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for f in features:
        annotation: Any
        if f.type is FeatureType.FLOAT:
            annotation = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=f.min, le=f.max)]
        elif f.type is FeatureType.INT:
            annotation = Annotated[int, Field(strict=True, ge=f.min, le=f.max)]
        elif f.type is FeatureType.BOOL:
            annotation = StrictBool
        else:
            annotation = Literal[tuple(f.values or ())]
        if f.required:
            fields[f.name] = (annotation, ...)
        else:
            fields[f.name] = (annotation | None, None)
    model: type[BaseModel] = pydantic.create_model(
        "Instance", __config__=ConfigDict(extra="forbid"), **fields
    )
    return model


def _read(path: str, flag: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as err:
        raise SchemaError(f"{flag}: cannot read {path!r} ({err.strerror}); give a readable path") from err
