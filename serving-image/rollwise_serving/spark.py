"""Score a PySpark DataFrame with a pinned model: ``rollwise-batch``'s scorer as a ``mapInPandas``.

    from rollwise_serving.spark import score
    scored = score(df, model_uri="s3://models/iris-v1.joblib", sha256="0f0a...", format="sklearn",
                   feature_schema="/models/iris-schema.json", keep=["id"])

Each Python worker loads the artifact once (``_SCORERS``, keyed by the settings and the pinned
digest) through the same ``repository.load_slot`` as a server, so the digest is checked before
the artifact is deserialised, and scores each Arrow batch with ``batch.Scorer``: the same checks,
runtime and output columns as ``rollwise-batch``, hence the same predictions. The driver loads it
once too, to fail early on a wrong digest and to learn the output columns Spark needs declared.

Rejected rows are kept, not dropped: the result has one row per input row, the ``keep`` columns,
the prediction columns (null for a rejected row) and ``rejection``, null for a scored row and
the schema's problems (``sepal_width: 99 is outside [1.5, 5.5]``) for a rejected one. Split them
with ``scored.filter("rejection IS NULL")`` and ``scored.filter("rejection IS NOT NULL")``.
The model URI must be readable from every executor (a shared path, http(s) or S3).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from rollwise_contract.model import ModelFormat

from rollwise_serving.batch import BatchSettings, Scorer, load_scorer

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.types import DataType

REJECTION = "rejection"
"""The column holding a rejected row's problems (null for a scored row)."""

_SCORERS: dict[tuple[str, ...], Scorer] = {}
"""Loaded models of this Python process, by their settings and pinned digest: a Spark worker
process reuses one across tasks and batches (``spark.python.worker.reuse``, on by default)."""


LOADS = 0
"""How many times this process loaded a model (a test reads it in each worker: once per process)."""


def _settings(options: dict[str, Any]) -> BatchSettings:
    """The model part of a batch job's settings (input and output are Spark's)."""
    return BatchSettings(input="spark", output=Path("/nonexistent"), **options)


def _scorer(options: dict[str, Any]) -> Scorer:
    global LOADS  # noqa: PLW0603 - the per-process cache's own counter
    key = tuple(f"{k}={options[k]}" for k in sorted(options))
    scorer = _SCORERS.get(key)
    if scorer is None:
        scorer = _SCORERS[key] = load_scorer(_settings(options))
        LOADS += 1
    return scorer


def model_options(
    *,
    model_uri: str,
    sha256: str | None = None,
    format: str = "sklearn",
    feature_schema: str | None = None,
    features: Sequence[str] | None = None,
    cache_dir: str = "/tmp/rollwise-cache",
    s3_endpoint: str | None = None,
) -> dict[str, Any]:
    """The model settings ``score`` ships to the workers (plain values: they are pickled), and
    the key of the workers' cache."""
    options: dict[str, Any] = {
        "model_uri": model_uri,
        "sha256": sha256,
        "format": ModelFormat(format),
        "feature_schema": feature_schema,
        "features": tuple(features) if features is not None else None,
        "cache_dir": Path(cache_dir),
        "s3_endpoint": s3_endpoint,
    }
    return {k: v for k, v in options.items() if v is not None}


def scorer(options: dict[str, Any]) -> Scorer:
    """This process's scorer for ``options`` (``model_options``): loaded on first use, then reused."""
    return _scorer(options)


def score(
    df: DataFrame,
    *,
    model_uri: str,
    sha256: str | None = None,
    format: str = "sklearn",
    feature_schema: str | None = None,
    features: Sequence[str] | None = None,
    keep: Sequence[str] = (),
    cache_dir: str = "/tmp/rollwise-cache",
    s3_endpoint: str | None = None,
) -> DataFrame:
    """``df`` scored: its ``keep`` columns, the model's prediction columns and ``rejection``.
    Raises ``batch.PermanentError`` on the driver when the model is refused (a wrong digest)."""
    options = model_options(
        model_uri=model_uri,
        sha256=sha256,
        format=format,
        feature_schema=feature_schema,
        features=features,
        cache_dir=cache_dir,
        s3_endpoint=s3_endpoint,
    )
    scorer = _scorer(options)
    kept = list(keep)
    missing = [
        c for c in [*kept, *(f.name for f in scorer.checker.features if f.required)] if c not in df.columns
    ]
    if missing:
        raise ValueError(
            f"the DataFrame has no column {', '.join(missing)}; its columns are {', '.join(df.columns)}"
        )
    clash = [c.name for c in scorer.columns if c.name in kept] + ([REJECTION] if REJECTION in kept else [])
    if clash:
        raise ValueError(f"keep={clash}: the output has columns of these names; keep other columns")
    schema = _output_schema(df, scorer, kept)
    needed = list(dict.fromkeys([*(n for n in scorer.checker.names if n in df.columns), *kept]))

    def score_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        local = _scorer(options)
        for frame in batches:
            yield _scored_frame(local, frame, kept)

    return df.select(*needed).mapInPandas(score_batches, schema)


def _output_schema(df: DataFrame, scorer: Scorer, kept: Sequence[str]) -> Any:
    from pyspark.sql.types import StringType, StructField, StructType  # noqa: PLC0415

    fields = [df.schema[c] for c in kept]
    fields += [StructField(c.name, _spark_type(c.type), nullable=True) for c in scorer.columns]
    fields.append(StructField(REJECTION, StringType(), nullable=True))
    return StructType(fields)


def _spark_type(kind: pa.DataType) -> DataType:
    from pyspark.sql.types import BooleanType, DoubleType, LongType, StringType  # noqa: PLC0415

    if pa.types.is_string(kind):
        return StringType()
    if pa.types.is_boolean(kind):
        return BooleanType()
    if pa.types.is_integer(kind):
        return LongType()
    return DoubleType()


def _scored_frame(scorer: Scorer, frame: pd.DataFrame, kept: Sequence[str]) -> pd.DataFrame:
    """One Arrow batch scored: every row kept, predictions of rejected rows null."""
    rows = len(frame)
    columns = {name: _values(frame[name]) for name in scorer.checker.names if name in frame.columns}
    scored = scorer.score(columns, rows, name="")
    out = {c: frame[c].reset_index(drop=True) for c in kept}
    for c in scorer.columns:
        values = scorer.arrow(c, scored.outputs[c.name])
        if scored.problems:
            # scatter the scored rows' values back among the rejected rows' nulls
            positions = np.cumsum(scored.ok) - 1
            taken = values.take(pa.array(np.where(scored.ok, positions, 0)))
            values = pc.if_else(pa.array(scored.ok), taken, pa.scalar(None, c.type))
        # nulls: NaN for doubles and None for strings (Spark reads both as null), pandas' nullable
        # Int64 for integers (a float NaN would not fit a LongType)
        out[c.name] = values.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    messages: list[str | None] = [None] * rows
    for r, problems in scored.problems.items():
        messages[r] = "; ".join(p.message for p in problems)
    out[REJECTION] = pd.Series(messages, dtype=object)
    return pd.DataFrame(out)


def _values(series: pd.Series[Any]) -> np.ndarray[Any, Any]:
    """A pandas column as ``check_rows`` reads it: numbers as float64 (NaN for nulls), the rest
    as objects (None for nulls)."""
    if series.dtype.kind in "biuf":
        numbers: np.ndarray[Any, Any] = series.to_numpy(dtype=np.float64, na_value=np.nan)
        return numbers
    return np.asarray([None if v is None or v is pd.NA else v for v in series.tolist()], dtype=object)
