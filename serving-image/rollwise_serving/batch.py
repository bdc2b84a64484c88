"""``rollwise-batch``: score one shard of a dataset with the server's own loading, checks and runtimes.

A batch job is a Kubernetes Indexed Job: pod ``i`` of ``n`` runs ``rollwise-batch --shard-index i
--shard-count n`` (the index defaults to ``JOB_COMPLETION_INDEX``, which the Job sets). Every shard
loads the model through ``repository.load_slot``, so the pinned digest is checked before the
artifact is deserialised, exactly as in a server, and rows are checked against the feature schema
with the server's rules and messages (``SchemaChecker.check_rows``) before the runtime's
``predict``. A row that breaks the schema is never dropped: it goes to the shard's rejects file
with its values and every problem.

Sharding (``shard_units``) reads nothing but the shard's own files, so a corrupt file fails only
the shards that own a piece of it. Outputs are written to a temporary name and renamed, and a
shard's done marker is written last: a shard killed half-way leaves no part that looks finished,
and its rerun rewrites the same names (no duplicates); a rerun whose marker matches the input,
model and settings (its fingerprint) skips the shard without loading anything.

Exit status, for a Job's ``podFailurePolicy``: 0 scored or skipped; 2 bad settings; 3 a permanent
problem of the model or the data (digest mismatch, unloadable artifact, corrupt input file, a
missing column), which a retry cannot fix; 1 anything else (a failed download, a full disk),
worth retrying. Each outcome is also the shard's summary JSON in ``--termination-log``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Annotated, Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict
from rollwise_contract.batch import BacktestReport, DataFormat, ExitCode, ShardState, Tally
from rollwise_contract.features import Feature, FeatureSchema, ModelOutput, OutputKind
from rollwise_contract.model import PICKLE_FORMATS, ModelFormat
from rollwise_contract.redact import redact_uri

from rollwise_serving import backtest
from rollwise_serving.config import (
    _DIGEST_PROBLEM,
    CacheDirSetting,
    FeatureSchemaSetting,
    Flag,
    FormatSetting,
    LogLevelSetting,
    MaxModelBytesSetting,
    ModelUri,
    PythonClassSetting,
    RedactingFilter,
    Redactor,
    S3EndpointSetting,
    SettingsError,
    Sha256Setting,
    _choice,
    _digest,
    _format_or,
    _int_between,
    _integer,
    build_parser,
    digest_problems,
    raw_settings,
    validated,
)
from rollwise_serving.errors import ArtifactTooLargeError, StorageError
from rollwise_serving.features import FeatureProblem, SchemaChecker, SchemaError
from rollwise_serving.protocol import InferInput
from rollwise_serving.repository import LoadState, ModelSlot, load_slot
from rollwise_serving.runtimes import Array, Runtime
from rollwise_serving.storage import fetch_artifact, s3

log = logging.getLogger("rollwise_serving.batch")

TERMINATION_LOG = Path("/dev/termination-log")
"""Where Kubernetes reads a container's termination message (``terminationMessagePath``)."""
TERMINATION_MESSAGE_BYTES = 4096
"""Kubernetes keeps at most this much of a termination message."""


SUFFIXES = {DataFormat.PARQUET: (".parquet", ".pq"), DataFormat.CSV: (".csv",)}


class TerminatedError(RuntimeError):
    """SIGTERM arrived (the pod was deleted, evicted or its node drained): stop now with a retryable
    exit. As a container's PID 1 the scorer would otherwise ignore SIGTERM and score on, to be
    killed at the end of the grace period, or finish and report a shard its Job meant to stop."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise TerminatedError("stopped by SIGTERM (the pod was deleted, evicted or drained); the Job retries it")


class PermanentError(RuntimeError):
    """The model or the data is wrong (corrupt file, missing column, refused artifact): a retry
    would fail the same way, so the shard exits 3."""


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise ValueError("no names")
    return names


_NAMES_PROBLEM = "is not valid; use comma-separated column names, e.g. id,customer"


class BatchSettings(BaseModel):
    """One shard's settings: the model as ``rollwise-serve`` takes it (same flags, variables and
    checks), the input, the output and the shard."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    model_uri: ModelUri
    format: FormatSetting = ModelFormat.SKLEARN
    sha256: Sha256Setting = None
    feature_schema: FeatureSchemaSetting = None
    """The model's feature schema: which input columns are its features, in model order, and
    what values they may take. Without it, ``--features`` names the columns (floats, no bounds)."""
    features: Annotated[
        tuple[str, ...] | None,
        Flag(
            "comma-separated feature columns in model order (without --feature-schema)",
            _NAMES_PROBLEM,
            _names,
        ),
    ] = None
    input: Annotated[
        str,
        Flag(
            "a file or directory (a PVC), an http(s):// file, or s3://bucket/prefix",
            required="point it at the data, e.g. /data/scores/ or s3://bucket/day=2026-12-01/",
            uri=True,
        ),
    ]
    input_format: Annotated[
        DataFormat | None, _choice("parquet | csv (default: from the file names)", DataFormat)
    ] = None
    output: Annotated[
        Path,
        Flag(
            "directory for the parts, rejects and done markers (shared by every shard)",
            required="point it at a writable directory, e.g. /output/run-1",
        ),
    ]
    output_format: Annotated[DataFormat, _choice("parquet | csv (default parquet)", DataFormat)] = (
        DataFormat.PARQUET
    )
    keep: Annotated[
        tuple[str, ...],
        Flag("comma-separated input columns copied to the output (default none)", _NAMES_PROBLEM, _names),
    ] = ()
    shard_index: Annotated[
        int,
        Flag(
            "this shard, 0..count-1 (default JOB_COMPLETION_INDEX, else 0)",
            "is not valid; use an integer from 0 to 99999",
            partial(_int_between, 0, 99_999),
            blank_is_unset=False,
            env="JOB_COMPLETION_INDEX",
        ),
    ] = 0
    """Set by an Indexed Job as ``JOB_COMPLETION_INDEX`` in each pod; a flag wins over it."""
    shard_count: Annotated[int, _integer("shards in the job (default 1)", 1, 100_000)] = 1
    chunk_rows: Annotated[int, _integer("rows per predict call (default 65536)", 1, 1 << 24)] = 1 << 16
    """Rows read, checked and predicted at a time: memory stays near one chunk's columns
    whatever the data's size, and 64k rows make numpy's per-call cost negligible."""
    max_input_bytes: Annotated[
        int, _integer("largest input file, in bytes (default 68719476736 = 64 GiB)", 1, 1 << 44)
    ] = 64 << 30
    """Largest input file downloaded or read; a download is cut there (as ``--max-model-bytes``)."""
    label_column: Annotated[
        str | None,
        Flag(
            "backtest: the column holding each row's true label (with --baseline-model-uri); the "
            "shard reports paired tallies and writes no part"
        ),
    ] = None
    """Backtest mode: both models score every row and the shard reports how often each was right
    (``rollwise_contract.batch.BacktestReport``) instead of writing predictions."""
    baseline_model_uri: Annotated[
        str | None, Flag("backtest: the model the candidate is compared with (the stable)", uri=True)
    ] = None
    baseline_format: Annotated[
        ModelFormat | None, _choice("format of the baseline (default: same as --format)", ModelFormat)
    ] = None
    baseline_sha256: Annotated[
        str | None, Flag("digest of the baseline artifact", _DIGEST_PROBLEM, _digest)
    ] = None
    baseline_feature_schema: Annotated[
        str | None, Flag("the baseline's feature schema JSON (default: the candidate's)")
    ] = None
    termination_log: Annotated[
        Path | None,
        Flag("file the shard's summary JSON is written to (default /dev/termination-log when writable)"),
    ] = None
    cache_dir: CacheDirSetting = Path("/tmp/rollwise-cache")
    max_model_bytes: MaxModelBytesSetting = 4 << 30
    python_class: PythonClassSetting = "Model"
    s3_endpoint: S3EndpointSetting = None
    log_level: LogLevelSetting = "info"


def parse_batch_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> BatchSettings:
    """Flags over ``ROLLWISE_*`` over defaults, as ``rollwise-serve``; raises ``SettingsError``
    listing every problem."""
    parser = build_parser(
        BatchSettings,
        "rollwise-batch",
        "Score one shard of a dataset with a pinned model; every flag can also be set as "
        "ROLLWISE_<FLAG> (the shard index as JOB_COMPLETION_INDEX).",
    )
    raw = raw_settings(parser, BatchSettings, argv, environ)
    problems = digest_problems(raw)
    if ("label_column" in raw) != ("baseline_model_uri" in raw):
        problems.append(
            "a backtest needs both --label-column and --baseline-model-uri; give both, or neither to score"
        )
    if "baseline_model_uri" in raw:
        bfmt = _format_or(raw.get("baseline_format"), _format_or(raw.get("format"), ModelFormat.SKLEARN))
        if bfmt in PICKLE_FORMATS and "baseline_sha256" not in raw:
            problems.append(
                f"--baseline-sha256 is required for a {bfmt} baseline: loading it runs code; pin its digest"
            )
    if ("feature_schema" in raw) == ("features" in raw):
        problems.append(
            "give the model's feature columns: --feature-schema (a path or inline JSON) or --features a,b,c"
        )
    try:
        index, count = int(raw.get("shard_index", "0")), int(raw.get("shard_count", "1"))
    except ValueError:
        pass
    else:
        if index >= count:
            problems.append(
                f"--shard-index {index} is not a shard of --shard-count {count}; use 0 to {count - 1}"
            )
    return validated(BatchSettings, raw, problems)


# ---- the scorer, shared with rollwise_serving.spark ---------------------------------------------


@dataclass(frozen=True, slots=True)
class OutputColumn:
    name: str
    output: str
    """The model output it comes from (``label``, ``probabilities``, ``prediction``)."""
    index: int | None
    """Its column in a 2-D output; None for a 1-D one."""
    type: pa.DataType


@dataclass(frozen=True, slots=True)
class Scored:
    ok: np.ndarray[Any, np.dtype[np.bool_]]
    """Per input row: scored (True) or rejected."""
    outputs: dict[str, Array]
    """Output column -> values of the scored rows, in order."""
    problems: dict[int, list[FeatureProblem]]
    """Rejected row (index in the chunk) -> every problem it has."""
    inputs: np.ndarray[Any, Any] | None = None
    """The scored rows' features as the model received them (a backtest reads segments from it)."""
    label_index: Array | None = None
    """The ``label`` column's rows as positions in the runtime's classes, when the runtime gave
    them (`Prediction.label_index`)."""


_ARROW_TYPES = {
    "BYTES": pa.string(),
    "BOOL": pa.bool_(),
    "FP16": pa.float64(),
    "FP32": pa.float64(),
    "FP64": pa.float64(),
}


class Scorer:
    """A loaded model and its checker: columns of rows in, predictions and rejections out. The
    one scoring path of ``rollwise-batch`` and ``rollwise_serving.spark``, so both answer alike."""

    def __init__(self, runtime: Runtime, checker: SchemaChecker, digest: str) -> None:
        self.runtime = runtime
        self.checker = checker
        self.digest = digest
        self.input_name = runtime.inputs[0].name if runtime.inputs else "input-0"
        self.columns = self._output_columns()
        classes = runtime.classes or []
        self._classes = pa.array(classes, pa.string())
        self._sorted = np.sort(np.asarray(classes, dtype=str)) if classes else None
        self._order = np.argsort(np.asarray(classes, dtype=str)) if classes else None
        self._index = ClassIndex(classes) if classes else None

    def _output_columns(self) -> list[OutputColumn]:
        """One column per 1-D output, one per class (``probability_<class>``) or index
        (``<output>_<j>``) of a 2-D output; fixed before any row is read, so every part of a job
        and Spark's declared schema have the same columns."""
        classes = self.runtime.classes or (self.checker.output.classes if self.checker.output else None)
        columns = []
        for spec in self.runtime.outputs:
            kind = _ARROW_TYPES.get(
                spec.datatype, pa.int64() if spec.datatype.startswith(("INT", "UINT")) else None
            )
            if kind is None:
                raise PermanentError(
                    f"output {spec.name!r} is {spec.datatype}, which batch scoring cannot write"
                )
            if len(spec.shape) == 1:
                columns.append(OutputColumn(spec.name, spec.name, None, kind))
                continue
            width = spec.shape[1] if len(spec.shape) == 2 else -1
            if width < 1:
                raise PermanentError(
                    f"output {spec.name!r} has shape {list(spec.shape)}; batch scoring writes outputs of "
                    "shape [N] or [N, k] with k known"
                )
            for j in range(width):
                named = spec.name == "probabilities" and classes and len(classes) == width
                name = f"probability_{classes[j]}" if named and classes else f"{spec.name}_{j}"
                columns.append(OutputColumn(name, spec.name, j, kind))
        return columns

    def arrow(
        self, column: OutputColumn, values: Array, *, encoded: bool = False, label_index: Array | None = None
    ) -> pa.Array:
        """An output column as arrow. Text labels that are the model's classes go through their
        class index (`label_index` when the runtime gave it, else read off the text): 3x cheaper
        than converting numpy's strings. `encoded`: a text column stays dictionary-encoded
        (`LABEL_TYPE`), as the part is written when its readers need no arrow schema
        (`PartWriter`); otherwise the dictionary is cast to text."""
        if self._sorted is not None and values.dtype.kind == "U" and pa.types.is_string(column.type):
            assert self._order is not None and self._index is not None
            if column.name == "label" and label_index is not None and len(label_index) == len(values):
                index: Array | None = label_index.astype(np.int32, copy=False)
            else:
                index = self._index.of(values)
            if index is None:
                at = np.minimum(np.searchsorted(self._sorted, values), len(self._sorted) - 1)
                if np.array_equal(self._sorted[at], values):
                    index = self._order[at].astype(np.int32)
            if index is not None:
                labels = pa.DictionaryArray.from_arrays(pa.array(index), self._classes)
                return labels if encoded else labels.cast(pa.string())
        if encoded and pa.types.is_string(column.type):
            return pa.array(values, type=pa.string()).dictionary_encode()
        return pa.array(values, type=column.type)

    def score(
        self, columns: Mapping[str, np.ndarray[Any, Any]], rows: int, name: str = "rows", first_row: int = 0
    ) -> Scored:
        matrix, problems = self.checker.check_rows(columns, rows, name, first_row)
        ok = np.ones(rows, dtype=bool)
        if problems:
            ok[list(problems)] = False
        good = matrix[ok] if problems else matrix
        if not len(good):
            empty = {c.name: np.empty(0, dtype=object) for c in self.columns}
            return Scored(ok, empty, problems, good)
        tensor = InferInput(self.input_name, "FP64", good.shape, good)
        prediction = self.runtime.predict(self.runtime.prepare([tensor]))
        outputs: dict[str, Array] = {}
        for c in self.columns:
            values = np.asarray(prediction.outputs[c.output])
            outputs[c.name] = values if c.index is None else values[:, c.index]
        return Scored(ok, outputs, problems, good, prediction.label_index)


class ClassIndex:
    """Text labels -> each one's index in the model's classes, by one character: at ``position``
    the classes' characters differ (``setosa``, ``versicolor``, ``virginica``: the fourth), so that
    character's code looks the index up, and one comparison of the labels with the classes at
    those indices confirms it (any other text fails it). About 5x cheaper than a sorted search of
    the strings; classes that share every position, or labels of another width, get None."""

    def __init__(self, classes: Sequence[str]) -> None:
        self.classes = np.asarray(classes, dtype=str)
        self.width = width = self.classes.dtype.itemsize // 4
        codes = self.classes.view(np.uint32).reshape(len(self.classes), width)
        # numpy's fixed-width strings drop trailing NULs: such a class goes to the sorted search
        nul = any("\x00" in c for c in classes)
        self.position = (
            None
            if nul
            else next((j for j in range(width) if len(set(codes[:, j].tolist())) == len(self.classes)), None)
        )
        self.table = np.full(1, -1, dtype=np.int32)
        if self.position is not None and len(self.classes):
            keys = codes[:, self.position]
            self.table = np.full(int(keys.max()) + 2, -1, dtype=np.int32)  # the last: any other code
            self.table[keys] = np.arange(len(self.classes), dtype=np.int32)

    def of(self, labels: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.int32]] | None:
        if self.position is None or labels.dtype != self.classes.dtype or labels.ndim != 1:
            return None
        labels = np.ascontiguousarray(labels)
        codes = labels.view(np.uint32).reshape(len(labels), self.width)[:, self.position]
        index = self.table[np.minimum(codes, len(self.table) - 1)]
        if len(labels) and index.min() < 0:
            return None
        if not np.array_equal(self.classes[index].view(np.uint32), labels.view(np.uint32)):
            return None
        return index


def checker_of(settings_schema: str | None, features: Sequence[str] | None) -> SchemaChecker:
    """The feature schema, or one made of ``--features`` (floats without bounds, all required)."""
    if settings_schema:
        return SchemaChecker.load(settings_schema)
    declared = FeatureSchema(
        features=[Feature(name=n) for n in features or ()], output=ModelOutput(kind=OutputKind.CLASSIFIER)
    )
    return SchemaChecker(declared)


def load_scorer(settings: BatchSettings, *, baseline: bool = False) -> Scorer:
    """Fetch, verify (the pinned digest, before deserialising) and load the model (or a backtest's
    baseline), as a server does; ``PermanentError`` with the repository's reason when refused."""
    if baseline:
        assert settings.baseline_model_uri is not None
        schema = settings.baseline_feature_schema or settings.feature_schema
        checker = checker_of(schema, settings.features)
        role, uri = "baseline", settings.baseline_model_uri
        fmt, sha256 = settings.baseline_format or settings.format, settings.baseline_sha256
    else:
        checker = checker_of(settings.feature_schema, settings.features)
        role, uri, fmt, sha256 = "primary", settings.model_uri, settings.format, settings.sha256
    classes = checker.output.classes if checker.output else None
    slot = ModelSlot(role, uri, fmt, sha256)
    load_slot(slot, settings, classes)
    if slot.state is not LoadState.READY or slot.runtime is None or slot.digest is None:
        which = "baseline model" if baseline else "model"
        if slot.retryable:
            raise StorageError(f"{which} not loaded: {slot.reason}")
        raise PermanentError(f"{which} not loaded: {slot.reason}")
    return Scorer(slot.runtime, checker, slot.digest)


# ---- the input and its shards -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    uri: str
    name: str
    """Its path under the input (what rejects and messages name)."""
    identity: str
    """What the fingerprint hashes: path, size and mtime; key, size and ETag; or the URL."""


def list_sources(settings: BatchSettings) -> tuple[list[Source], DataFormat]:
    """The input's files in name order, and their format. A directory or S3 prefix yields the
    files ending in the format's suffixes; names starting with ``_`` or ``.`` (``_SUCCESS``,
    ``.crc``, the markers Spark and Hadoop write) are skipped."""
    uri = settings.input
    scheme = urlsplit(uri).scheme.lower()
    fmt = settings.input_format
    suffixes = SUFFIXES[fmt] if fmt else SUFFIXES[DataFormat.PARQUET] + SUFFIXES[DataFormat.CSV]
    if scheme in ("http", "https"):
        sources = [Source(uri, Path(urlsplit(uri).path).name or "input", uri)]
    elif scheme in s3.SCHEMES:
        sources = [
            Source(o.uri, o.key, f"{o.key} {o.size} {o.etag}")
            for o in s3.list_objects(uri, endpoint=settings.s3_endpoint)
            if _is_data(Path(o.key).name, suffixes)
        ]
    else:
        root = Path(urlsplit(uri).path if scheme == "file" else uri)
        if root.is_file():
            files = [root]
        elif root.is_dir():
            files = sorted(p for p in root.rglob("*") if p.is_file() and _is_data(p.name, suffixes))
        else:
            raise PermanentError(
                f"--input {uri!r} is neither a file nor a directory; check the path or the mount"
            )
        base = root.parent if root.is_file() else root
        sources = []
        for p in files:
            st = p.stat()
            sources.append(
                Source(
                    str(p), str(p.relative_to(base)), f"{p.relative_to(base)} {st.st_size} {st.st_mtime_ns}"
                )
            )
    if not sources:
        raise PermanentError(f"--input {redact_uri(uri)} holds no {' or '.join(suffixes)} files")
    if fmt is None:
        fmt = _format_of(sources[0].name)
        other = [s.name for s in sources if _format_of(s.name) is not fmt]
        if other:
            raise PermanentError(
                f"--input {redact_uri(uri)} mixes formats ({sources[0].name}, {other[0]}); set --input-format"
            )
    return sources, fmt


def _is_data(name: str, suffixes: tuple[str, ...]) -> bool:
    return not name.startswith(("_", ".")) and name.lower().endswith(suffixes)


def _format_of(name: str) -> DataFormat:
    return DataFormat.CSV if name.lower().endswith(SUFFIXES[DataFormat.CSV]) else DataFormat.PARQUET


@dataclass(frozen=True, slots=True)
class Unit:
    """Piece ``piece`` of ``pieces`` of file number ``file``: its rows ``[rows*piece//pieces,
    rows*(piece+1)//pieces)``, known once that file's row count is read."""

    file: int
    piece: int
    pieces: int

    def rows(self, total: int) -> tuple[int, int]:
        return total * self.piece // self.pieces, total * (self.piece + 1) // self.pieces


def shard_units(files: int, index: int, count: int) -> list[Unit]:
    """The pieces of files shard ``index`` of ``count`` scores: each file is cut into ``p =
    ceil(count / files)`` pieces of equal row count, pieces are numbered file by file, and piece
    ``u`` belongs to shard ``u mod count``. Deterministic, every row in exactly one shard, and a
    shard reads only its own files (their row counts are the only thing it must know).

    ==========  ======  ======  ========================================
    files       count   p       shard 0 / 1 / 2 / 3 get
    ==========  ======  ======  ========================================
    1           4       4       quarter 0 / 1 / 2 / 3 of the file
    8           4       1       files 0,4 / 1,5 / 2,6 / 3,7
    3           4       2       halves f0a,f2a / f0b,f2b / f1a / f1b
    ==========  ======  ======  ========================================
    """
    pieces = math.ceil(count / files)
    units = [Unit(f, j, pieces) for f in range(files) for j in range(pieces)]
    return units[index::count]


def fetch_source(source: Source, settings: BatchSettings) -> Path:
    """The file on local disk: itself, or a download into ``--cache-dir`` bounded by
    ``--max-input-bytes`` (``storage.fetch_artifact``: a temporary name renamed when complete)."""
    local = urlsplit(source.uri).scheme.lower() in ("", "file")
    try:
        if local:
            path = Path(urlsplit(source.uri).path)
            if path.stat().st_size > settings.max_input_bytes:
                raise PermanentError(
                    f"input file {source.name} is over --max-input-bytes ({settings.max_input_bytes})"
                )
            return path
        return fetch_artifact(
            source.uri,
            settings.cache_dir / "inputs",
            max_bytes=settings.max_input_bytes,
            s3_endpoint=settings.s3_endpoint,
        )
    except ArtifactTooLargeError as err:
        raise PermanentError(
            f"input file {source.name} is over --max-input-bytes ({settings.max_input_bytes}); "
            "raise it or split the file"
        ) from err
    except OSError as err:
        raise StorageError(f"cannot read input file {source.name}: {err}") from err


class Reader:
    """One input file, read in chunks of at most ``chunk_rows`` rows of the columns asked for."""

    def __init__(self, path: Path, name: str, fmt: DataFormat) -> None:
        self.path, self.name, self.fmt = path, name, fmt
        self._text: set[str] = set()
        try:
            if fmt is DataFormat.PARQUET:
                self._parquet: pq.ParquetFile | None = pq.ParquetFile(path)
                self.schema = self._parquet.schema_arrow
                self.rows = self._parquet.metadata.num_rows
            else:
                self._parquet = None
                with pa_csv.open_csv(path) as reader:
                    self.schema = reader.schema
                self.rows = self._count_csv_rows()
        except (pa.ArrowException, OSError) as err:
            raise self.corrupt(err) from err

    def corrupt(self, err: Exception) -> PermanentError:
        return PermanentError(
            f"input file {self.name} is not a readable {self.fmt.value} file ({type(err).__name__}: {err}); "
            "replace or remove it"
        )

    def _count_csv_rows(self) -> int:
        first = self.schema.names[0]
        options = pa_csv.ConvertOptions(include_columns=[first], column_types={first: pa.string()})
        with pa_csv.open_csv(self.path, convert_options=options) as reader:
            return sum(batch.num_rows for batch in reader)

    def check_columns(self, needed: Sequence[str], required: Sequence[str]) -> None:
        missing = [c for c in required if c not in self.schema.names]
        if missing:
            raise PermanentError(
                f"input file {self.name} has no column {', '.join(map(repr, missing))} (needed: "
                f"{', '.join(needed)}); its columns are {', '.join(self.schema.names)}"
            )

    def chunks(
        self, start: int, stop: int, columns: Sequence[str], chunk_rows: int
    ) -> Iterator[tuple[int, pa.RecordBatch]]:
        """(first row, batch) for rows ``[start, stop)`` of the file, in order."""
        present = [c for c in columns if c in self.schema.names]
        try:
            yield from self._chunks(start, stop, present, chunk_rows)
        except (pa.ArrowException, OSError) as err:
            raise self.corrupt(err) from err

    def _chunks(
        self, start: int, stop: int, columns: list[str], chunk_rows: int
    ) -> Iterator[tuple[int, pa.RecordBatch]]:
        if start >= stop:
            return
        offset, groups = 0, []
        if self._parquet is not None:
            meta = self._parquet.metadata
            first = None
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                if offset + n > start and offset < stop:
                    groups.append(g)
                    first = offset if first is None else first
                offset += n
            offset = first or 0
            batches = self._parquet.iter_batches(batch_size=chunk_rows, row_groups=groups, columns=columns)
        else:
            convert = pa_csv.ConvertOptions(
                include_columns=columns, column_types=self._csv_types(columns), strings_can_be_null=True
            )
            batches = pa_csv.open_csv(self.path, convert_options=convert)
        for batch in batches:
            lo, hi = max(start - offset, 0), min(stop - offset, batch.num_rows)
            if lo < hi:
                part = batch.slice(lo, hi - lo)
                for at in range(0, part.num_rows, chunk_rows):
                    yield offset + lo + at, part.slice(at, chunk_rows)
            offset += batch.num_rows
            if offset >= stop:
                break

    def text_columns(self, names: Sequence[str]) -> None:
        """Read these CSV columns (the features) as text: a value that is no number then becomes
        a rejected row (``_numpy`` converts each chunk), where a type inferred from the file's
        first block would fail the whole file at the first later block holding one."""
        self._text = set(names)

    def _csv_types(self, columns: Sequence[str]) -> dict[str, pa.DataType]:
        return {c: pa.string() if c in self._text else self.schema.field(c).type for c in columns}


# ---- one shard ----------------------------------------------------------------------------------


@dataclass
class Summary:
    """What a shard reports: the done marker's content and the termination message."""

    shard: int
    shards: int
    status: ShardState = ShardState.RUNNING
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    seconds: float = 0.0
    fingerprint: str = ""
    part: str = ""
    rejects: str = ""
    model_sha256: str | None = None
    error: str | None = None
    files: list[str] = field(default_factory=list)
    backtest: BacktestReport | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "shard": self.shard,
            "shards": self.shards,
            "status": self.status,
            "rowsIn": self.rows_in,
            "rowsOut": self.rows_out,
            "rowsRejected": self.rows_rejected,
            "seconds": round(self.seconds, 3),
            "rowsPerSecond": round(self.rows_in / self.seconds, 1) if self.seconds > 0 else 0.0,
            "fingerprint": self.fingerprint,
            "part": self.part,
            "rejects": self.rejects,
            "modelSha256": self.model_sha256,
        }
        if self.error is not None:
            body["error"] = self.error
        if self.backtest is not None:
            body["backtest"] = self.backtest.model_dump(mode="json", by_alias=True)
        return body

    def termination_message(self) -> str:
        """The summary as one JSON line within Kubernetes' 4096 bytes: a long error is cut, by at
        most what is over (no character takes more than 6 bytes in this JSON)."""
        body = self.as_json()
        text = json.dumps(body, ensure_ascii=False)
        if len(text.encode()) > TERMINATION_MESSAGE_BYTES and self.backtest and self.backtest.segments:
            # the total decides the rollout; segments that do not fit are said to be missing
            cut = self.backtest.model_copy(update={"segments": {}, "segments_dropped": True})
            body["backtest"] = cut.model_dump(mode="json", by_alias=True)
            text = json.dumps(body, ensure_ascii=False)
        while len(text.encode()) > TERMINATION_MESSAGE_BYTES and body.get("error"):
            over = len(text.encode()) - TERMINATION_MESSAGE_BYTES
            body["error"] = body["error"][: -max(1, over // 6)]
            text = json.dumps(body, ensure_ascii=False)
        return text


def part_name(index: int, fmt: DataFormat) -> str:
    return f"part-{index:05d}.{fmt.value}"


def rejects_name(index: int) -> str:
    return f"rejects-{index:05d}.jsonl"


def done_name(index: int) -> str:
    return f"done-{index:05d}.json"


def fingerprint_of(settings: BatchSettings, sources: Sequence[Source], units: Sequence[Unit]) -> str:
    """What a finished shard's output depends on: its files (identity), pieces, the pinned model,
    the schema and the output's shape. A rerun with the same fingerprint skips the shard."""
    files = sorted({u.file for u in units})
    doc = {
        "files": [sources[f].identity for f in files],
        "units": [[u.file, u.piece, u.pieces] for u in units],
        "model": [
            settings.model_uri if settings.sha256 is None else None,
            settings.sha256,
            settings.format.value,
        ],
        "schema": settings.feature_schema
        and hashlib.sha256(_schema_text(settings.feature_schema).encode()).hexdigest(),
        "features": settings.features,
        "keep": settings.keep,
        "output": settings.output_format.value,
        "shard": [settings.shard_index, settings.shard_count],
    }
    if settings.label_column is not None:
        doc["backtest"] = [
            settings.label_column,
            settings.baseline_model_uri if settings.baseline_sha256 is None else None,
            settings.baseline_sha256,
            (settings.baseline_format or settings.format).value,
            settings.baseline_feature_schema
            and hashlib.sha256(_schema_text(settings.baseline_feature_schema).encode()).hexdigest(),
        ]
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _schema_text(source: str) -> str:
    return source if source.lstrip().startswith("{") else Path(source).read_text()


def finished(settings: BatchSettings, fingerprint: str) -> Summary | None:
    """The marker of an earlier run of this shard with the same fingerprint, whose outputs are
    there; None when the shard must be scored (again)."""
    marker = settings.output / done_name(settings.shard_index)
    try:
        doc = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if doc.get("fingerprint") != fingerprint:
        log.info(
            "shard %d: its done marker is of another input, model or settings; scoring again",
            settings.shard_index,
        )
        return None
    if not all((settings.output / doc[k]).is_file() for k in ("part", "rejects") if doc.get(k)):
        return None
    tallies = doc.get("backtest")
    return Summary(
        shard=doc["shard"],
        shards=doc["shards"],
        status=ShardState.SKIPPED,
        rows_in=doc["rowsIn"],
        rows_out=doc["rowsOut"],
        rows_rejected=doc["rowsRejected"],
        seconds=doc["seconds"],
        fingerprint=fingerprint,
        part=doc["part"],
        rejects=doc["rejects"],
        model_sha256=doc.get("modelSha256"),
        backtest=BacktestReport.model_validate(tallies) if tallies is not None else None,
    )


WRITE_BATCH = 1 << 16
"""Values the Parquet writer encodes at a time (arrow's default 1024): fewer rounds of its
per-batch bookkeeping, about 5 % of the write; pages still close near 1 MiB."""


LABEL_TYPE = pa.dictionary(pa.int32(), pa.string())
"""Predicted text columns as the Parquet writer gets them when it can (`PartWriter.encodes`)."""


def plain_parquet(field: pa.Field) -> bool:
    """Whether a column reads back from Parquet as the same arrow type without the arrow schema
    the writer can store beside the data: types Parquet itself names (no durations, large or
    nested types, time zones but UTC, second timestamps) and no field metadata."""
    kind = field.type
    if field.metadata or pa.types.is_float16(kind):
        return False
    if pa.types.is_timestamp(kind):
        return kind.unit != "s" and kind.tz in (None, "UTC")
    return bool(
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_string(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_date32(kind)
    )


class PartWriter:
    """The shard's part, written under a temporary name; ``commit`` renames it into place."""

    def __init__(self, path: Path, fmt: DataFormat, labels: Sequence[str] = ()) -> None:
        self.path, self.fmt = path, fmt
        self.labels = labels
        """The predicted text columns (class names), written without statistics."""
        self.temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self._writer: pq.ParquetWriter | pa_csv.CSVWriter | None = None
        self.schema: pa.Schema | None = None
        self.encodes = False
        """Whether the predicted labels are handed over dictionary-encoded (`LABEL_TYPE`)."""

    def open(self, schema: pa.Schema) -> None:
        """`schema` is the part's as readers see it (labels as text). For Parquet, when every
        column is `plain_parquet`, the labels are handed over as dictionaries (their class
        indexes, no text built per row) and the arrow schema is not stored, so a reader gets
        them as text all the same: 10 % of a shard's CPU for the Iris model (#20's bench)."""
        self.schema = schema
        if self.fmt is DataFormat.PARQUET:
            # dictionary pages for text (labels repeat) only: probabilities are all distinct, and
            # trying a dictionary on them first cost as much again as the write (#20's bench).
            # Statistics (min, max, nulls) for every column but the predicted labels: a label's
            # min and max are two class names that every row group holds, which prune nothing,
            # and comparing each string for them was a fifth of the write.
            text = [f.name for f in schema if pa.types.is_string(f.type)]
            stats = [f.name for f in schema if f.name not in self.labels]
            self.encodes = bool(self.labels) and all(plain_parquet(f) for f in schema)
            if self.encodes:
                self.schema = pa.schema(
                    [pa.field(f.name, LABEL_TYPE) if f.name in self.labels else f for f in schema]
                )
            self._writer = pq.ParquetWriter(
                self.temp,
                self.schema,
                use_dictionary=text,
                write_statistics=stats,
                write_batch_size=WRITE_BATCH,
                store_schema=not self.encodes,
            )
        else:
            self._writer = pa_csv.CSVWriter(self.temp, schema)

    def write(self, table: pa.Table) -> None:
        assert self._writer is not None
        self._writer.write_table(table)

    def commit(self) -> None:
        assert self._writer is not None
        self._writer.close()
        _fsync(self.temp)
        self.temp.replace(self.path)

    def discard(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(pa.ArrowException, OSError):
                self._writer.close()
        self.temp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    with path.open("rb+") as f:
        os.fsync(f.fileno())


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class ShardRun:
    """One shard: score its units into one part, one rejects file and one done marker."""

    def __init__(
        self,
        settings: BatchSettings,
        *,
        scorer: Scorer,
        sources: list[Source],
        fmt: DataFormat,
        units: list[Unit],
        summary: Summary,
    ) -> None:
        self.settings, self.scorer, self.sources, self.fmt, self.units = settings, scorer, sources, fmt, units
        self.summary = summary
        names = self.scorer.checker.names
        self.columns = list(dict.fromkeys([*names, *settings.keep]))
        self.required = [f.name for f in scorer.checker.features if f.required] + list(settings.keep)
        clash = [c.name for c in scorer.columns if c.name in settings.keep]
        if clash:
            raise PermanentError(
                f"--keep {', '.join(clash)}: the prediction columns have these names; keep other columns"
            )

    def run(self) -> None:
        out = self.settings.output
        index = self.settings.shard_index
        labels = [c.name for c in self.scorer.columns if pa.types.is_string(c.type)]
        part = PartWriter(
            out / part_name(index, self.settings.output_format), self.settings.output_format, labels
        )
        rejects_path = out / rejects_name(index)
        rejects_temp = rejects_path.with_name(f".{rejects_path.name}.{os.getpid()}.tmp")
        try:
            with rejects_temp.open("w") as rejects:
                for unit in self.units:
                    self._score_unit(unit, part, rejects)
                if part.schema is None:
                    part.open(self._schema(None))
            _fsync(rejects_temp)
            rejects_temp.replace(rejects_path)
            part.commit()
        except BaseException:
            part.discard()
            rejects_temp.unlink(missing_ok=True)
            raise
        self.summary.part, self.summary.rejects = part.path.name, rejects_path.name

    def _schema(self, reader: Reader | None) -> pa.Schema:
        kept = [reader.schema.field(c) if reader else pa.field(c, pa.string()) for c in self.settings.keep]
        return pa.schema([*kept, *(pa.field(c.name, c.type) for c in self.scorer.columns)])

    def _score_unit(self, unit: Unit, part: PartWriter, rejects: IO[str]) -> None:
        source = self.sources[unit.file]
        reader = Reader(fetch_source(source, self.settings), source.name, self.fmt)
        reader.check_columns(self.columns, self.required)
        reader.text_columns(self.scorer.checker.names)
        if part.schema is None:
            part.open(self._schema(reader))
        start, stop = unit.rows(reader.rows)
        log.info("shard %d: %s rows %d..%d", self.settings.shard_index, source.name, start, stop)
        for first, batch in reader.chunks(start, stop, self.columns, self.settings.chunk_rows):
            self._score_chunk(source, first, batch, part, rejects)

    def _score_chunk(
        self, source: Source, first: int, batch: pa.RecordBatch, part: PartWriter, rejects: IO[str]
    ) -> None:
        columns = {name: _numpy(batch.column(name)) for name in batch.schema.names}
        scored = self.scorer.score(columns, batch.num_rows, "rows", first)
        self.summary.rows_in += batch.num_rows
        ok = pa.array(scored.ok) if scored.problems else None
        assert part.schema is not None
        kept = [
            (batch.column(c) if ok is None else batch.column(c).filter(ok)).cast(part.schema.field(c).type)
            for c in self.settings.keep
        ]
        predicted = [
            self.scorer.arrow(c, scored.outputs[c.name], encoded=part.encodes, label_index=scored.label_index)
            for c in self.scorer.columns
        ]
        table = pa.Table.from_arrays([*kept, *predicted], schema=part.schema) if kept or predicted else None
        if table is not None:
            part.write(table)
        self.summary.rows_out += batch.num_rows - len(scored.problems)
        if scored.problems:
            self.summary.rows_rejected += len(scored.problems)
            values = batch.take(pa.array(sorted(scored.problems))).to_pylist()
            for r, row in zip(sorted(scored.problems), values, strict=True):
                problems = scored.problems[r]
                record = {
                    "file": source.name,
                    "row": first + r,
                    "values": {k: _jsonable(v) for k, v in row.items()},
                    "message": "; ".join(p.message for p in problems),
                    "problems": [
                        {"feature": p.feature, "problem": p.problem.value, "message": p.message}
                        for p in problems
                    ],
                }
                rejects.write(json.dumps(record) + "\n")


class BacktestRun:
    """One backtest shard: the candidate and the baseline score every row of the shard's units
    and the shard adds up the paired tallies (``rollwise_serving.backtest``); no part is written,
    the tallies go to the done marker and the termination message.

    A row counts only when both models accept it and its label is there: a row one schema refuses
    is counted as rejected (``rowsRejected``), an unlabelled one as such, never judged."""

    def __init__(
        self,
        settings: BatchSettings,
        candidate: Scorer,
        baseline: Scorer,
        *,
        sources: list[Source],
        fmt: DataFormat,
        units: list[Unit],
        summary: Summary,
    ) -> None:
        assert settings.label_column is not None
        self.settings, self.sources, self.fmt, self.units = settings, sources, fmt, units
        self.candidate, self.baseline, self.summary = candidate, baseline, summary
        self.label = settings.label_column
        self.kind, self.output = _prediction_output(candidate)
        if _prediction_output(baseline)[0] is not self.kind:
            raise PermanentError(
                f"the candidate is a {self.kind} and the baseline is not; a backtest compares models of "
                "one kind"
            )
        self.names = list(dict.fromkeys([*candidate.checker.names, *baseline.checker.names]))
        self.columns = [*self.names, self.label] if self.label not in self.names else self.names
        self.required = [
            *(f.name for s in (candidate, baseline) for f in s.checker.features if f.required),
            self.label,
        ]
        self.report = BacktestReport(kind=self.kind)
        self.segment_tallies: dict[str, dict[str, Tally]] = {}

    def run(self) -> None:
        for unit in self.units:
            source = self.sources[unit.file]
            reader = Reader(fetch_source(source, self.settings), source.name, self.fmt)
            reader.check_columns(self.columns, self.required)
            reader.text_columns(self.names)
            start, stop = unit.rows(reader.rows)
            log.info("shard %d: backtest %s rows %d..%d", self.settings.shard_index, source.name, start, stop)
            for first, batch in reader.chunks(start, stop, self.columns, self.settings.chunk_rows):
                self._chunk(first, batch)
        self.summary.backtest = self.report.model_copy(update={"segments": self.segment_tallies})

    def _chunk(self, first: int, batch: pa.RecordBatch) -> None:
        rows = batch.num_rows
        columns = {name: _numpy(batch.column(name)) for name in self.names}
        cand = self.candidate.score(columns, rows, "rows", first)
        base = self.baseline.score(columns, rows, "rows", first)
        label_column = batch.column(self.label)
        labelled = ~np.asarray(label_column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        labels = np.asarray(label_column.to_numpy(zero_copy_only=False))
        both = cand.ok & base.ok
        judged = both & labelled
        c_all = np.empty(rows, dtype=object)
        c_all[cand.ok] = cand.outputs[self.output]
        b_all = np.empty(rows, dtype=object)
        b_all[base.ok] = base.outputs[self.output]
        c, b, y = c_all[judged], b_all[judged], labels[judged]
        if self.kind is OutputKind.REGRESSOR:
            c, b = c.astype(np.float64), b.astype(np.float64)
        self.summary.rows_in += rows
        self.summary.rows_out += int(judged.sum())
        self.summary.rows_rejected += int((~both).sum())
        self.report = self.report.model_copy(
            update={
                "rows_unlabelled": self.report.rows_unlabelled + int((both & ~labelled).sum()),
                "rows_rejected": self.report.rows_rejected + int((~both).sum()),
                "total": self.report.total + backtest.tally_of(self.kind, c, b, y),
            }
        )
        coder = self.candidate.checker.segments
        if coder is not None and cand.inputs is not None and len(y):
            # cand.inputs holds the candidate's accepted rows; of those, the judged ones
            inputs = cand.inputs[judged[cand.ok]]
            backtest.add_segments(
                self.segment_tallies, self.kind, coder=coder, inputs=inputs, candidate=c, baseline=b, labels=y
            )


def _prediction_output(scorer: Scorer) -> tuple[OutputKind, str]:
    """The output a backtest compares with the label: a classifier's ``label``, a regressor's
    ``prediction`` (one column)."""
    names = {c.name for c in scorer.columns if c.index is None}
    if "label" in names:
        return OutputKind.CLASSIFIER, "label"
    if "prediction" in names:
        return OutputKind.REGRESSOR, "prediction"
    raise PermanentError(
        "a backtest compares a 1-D label (classifier) or prediction (regressor) output with the label "
        f"column; this model's outputs are {', '.join(sorted(c.name for c in scorer.columns))}"
    )


def _numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray[Any, Any]:
    """A column as numpy: numbers as float64 with NaN for nulls (``check_rows`` reads NaN as left
    out), anything else as objects with None for nulls. Text that is all numbers (a CSV feature
    column) is parsed here at arrow's speed; text holding anything else goes to ``check_rows``
    as objects, which reads each value as the feature's (and rejects those that are none)."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        try:
            column = column.cast(pa.float64())
        except pa.ArrowInvalid:
            return np.asarray(column.to_pylist(), dtype=object)
        kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        if column.null_count == 0 and not pa.types.is_boolean(kind):
            numbers: np.ndarray[Any, Any] = column.to_numpy(zero_copy_only=False)
            return numbers
        floats: np.ndarray[Any, Any] = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
        return floats
    return np.asarray(column.to_pylist(), dtype=object)


def score_shard(settings: BatchSettings, summary: Summary) -> None:
    """Score this shard, or skip it when its done marker matches; fills ``summary``."""
    started = time.perf_counter()
    sources, fmt = list_sources(settings)
    units = shard_units(len(sources), settings.shard_index, settings.shard_count)
    summary.fingerprint = fingerprint_of(settings, sources, units)
    summary.files = [sources[u.file].name for u in units]
    done = finished(settings, summary.fingerprint)
    if done is not None:
        log.info(
            "shard %d: finished by an earlier run (%s); skipping",
            settings.shard_index,
            done_name(settings.shard_index),
        )
        summary.__dict__.update(done.__dict__)
        return
    settings.output.mkdir(parents=True, exist_ok=True)
    (settings.output / done_name(settings.shard_index)).unlink(missing_ok=True)
    for stale in settings.output.glob(f".*-{settings.shard_index:05d}.*.tmp"):
        stale.unlink(missing_ok=True)  # a killed run's leftovers
    scorer = load_scorer(settings)
    summary.model_sha256 = scorer.digest
    if settings.label_column is not None:
        baseline = load_scorer(settings, baseline=True)
        BacktestRun(settings, scorer, baseline, sources=sources, fmt=fmt, units=units, summary=summary).run()
    else:
        ShardRun(settings, scorer=scorer, sources=sources, fmt=fmt, units=units, summary=summary).run()
    summary.seconds = time.perf_counter() - started
    summary.status = ShardState.SUCCEEDED
    marker = settings.output / done_name(settings.shard_index)
    temp = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps({**summary.as_json(), "files": summary.files}, indent=1) + "\n")
    _fsync(temp)
    temp.replace(marker)


def write_termination_message(settings: BatchSettings, summary: Summary) -> None:
    path = settings.termination_log
    if path is None:
        if not (TERMINATION_LOG.exists() and os.access(TERMINATION_LOG, os.W_OK)):
            return
        path = TERMINATION_LOG
    try:
        path.write_text(summary.termination_message())
    except OSError as err:
        log.warning("cannot write the termination message to %s: %s", path, err)


def _configure_logging(settings: BatchSettings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper() if settings.log_level != "trace" else "DEBUG",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    redactor = Redactor([settings.model_uri, settings.input])
    if redactor:
        for handler in logging.getLogger().handlers:
            handler.addFilter(RedactingFilter(redactor))


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_batch_settings(argv)
        checker_of(settings.feature_schema, settings.features)
    except SettingsError as err:
        for problem in err.problems:
            print(f"rollwise-batch: error: {problem}", file=sys.stderr)
        print("rollwise-batch: see `rollwise-batch --help`", file=sys.stderr)
        return ExitCode.SETTINGS
    except SchemaError as err:
        print(f"rollwise-batch: error: {err}", file=sys.stderr)
        return ExitCode.SETTINGS
    _configure_logging(settings)
    summary = Summary(settings.shard_index, settings.shard_count)
    secrets = Redactor([u for u in (settings.model_uri, settings.input, settings.baseline_model_uri) if u])
    started = time.perf_counter()
    code = ExitCode.SCORED
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        score_shard(settings, summary)
    except PermanentError as err:
        summary.status, summary.error, code = ShardState.FAILED, secrets.scrub(str(err)), ExitCode.PERMANENT
    except TerminatedError as err:
        summary.status, summary.error, code = ShardState.FAILED, str(err), ExitCode.RETRY
    except Exception as err:  # reported by index, and retried by the Job
        summary.status, summary.error, code = (
            ShardState.FAILED,
            secrets.scrub(f"{type(err).__name__}: {err}"),
            ExitCode.RETRY,
        )
        log.exception("shard %d failed", settings.shard_index)
    if code != ExitCode.SCORED:
        summary.seconds = time.perf_counter() - started
        log.error("shard %d of %d failed: %s", settings.shard_index, settings.shard_count, summary.error)
    write_termination_message(settings, summary)
    print(json.dumps(summary.as_json()))
    return code


if __name__ == "__main__":
    sys.exit(main())
