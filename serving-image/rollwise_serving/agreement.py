"""Shadow agreement: read two answers to the same request and compare them row by row.

Pure and transport-free: ``mirroring`` hands it the answer this pod sent and the one the shadow
sent back, and records what it returns. Both answers go through the same reader
(``read_answer``), so a label or value is found the same way on both sides, whichever format
(OIP ``/infer`` outputs or ``/predict``'s ``predictions``) and runtime produced it.

Why the answer's bytes rather than the runtime's arrays: the response body exists anyway, costs
the answering path nothing to keep, holds what a cache hit answered too, and was read by the
client; parsing it again happens in the mirror's sender, after the client has its answer.

Rows: a classifier's row agrees when both name the same class; its delta is the largest absolute
difference of the class probabilities when both answers carry them with as many classes. A
regressor's delta is ``|own - shadow|``; it "differs" (for the diff ring) when the delta is over
``RELATIVE_TOLERANCE`` of the value, so FP32 against FP64 rounding does not fill the ring.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from rollwise_contract.metrics import Uncomparable

from rollwise_serving import binary
from rollwise_serving.protocol import ProtocolError

RELATIVE_TOLERANCE: Final = 1e-6
DIFF_CAPACITY: Final = 64
"""Differing rows kept per worker process; the oldest goes first."""
INPUT_BYTES: Final = 2048
"""An input row longer than this (as JSON) is kept as its first 2 KiB of text, cut with ``...``."""
_LABEL_TYPES: Final = re.compile(r"BYTES|BOOL|U?INT\d+")
_FLOAT_TYPES: Final = re.compile(r"FP\d+")


class UnreadableError(Exception):
    """The body is not an inference answer this module reads."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One side's answer, one entry per row."""

    rows: int
    version: str | None
    labels: list[str] | None = None
    values: list[float | None] | None = None
    probabilities: list[list[float]] | None = None
    id: str | None = None
    """The answer's ``id`` (OIP), which labels name it by (the signals proxy keeps it)."""


@dataclass(frozen=True, slots=True)
class Row:
    index: int
    agreed: bool | None
    """Same class (classifiers); None for regressors."""
    delta: float | None
    """None for a classifier row without probabilities on both sides."""
    differs: bool
    own: str | float | None
    peer: str | float | None


@dataclass(frozen=True, slots=True)
class Comparison:
    rows: list[Row]
    uncomparable: int
    """Rows of ours that found no comparable row in the shadow's answer (``MISMATCH``)."""


# ---- reading an answer -------------------------------------------------------------------------


def read_answer(body: bytes, *, classifier: bool | None, header_length: int | None = None) -> Answer:
    """An OIP ``/infer`` answer (``outputs``) or a ``/predict`` one (``predictions``).

    ``classifier`` is what this pod knows of its own model (None: not known yet): it decides
    whether a rank-1 integer output is a class or a value. ``header_length``: the answer's JSON
    length when it carries binary outputs (the binary extension)."""
    try:
        head, rest = binary.split(body, header_length)
        doc = orjson.loads(head)
        if isinstance(doc, dict) and header_length is not None:
            doc = binary.inline(doc, rest)
    except orjson.JSONDecodeError as err:
        raise UnreadableError(f"not JSON: {err}") from err
    except ProtocolError as err:
        raise UnreadableError(f"binary outputs unreadable: {err}") from err
    if not isinstance(doc, dict):
        raise UnreadableError("not a JSON object")
    version = doc.get("model_version")
    version = version if isinstance(version, str) else None
    answer_id = doc.get("id") if isinstance(doc.get("id"), str) else None
    if isinstance(doc.get("outputs"), list):
        return replace(_read_outputs(doc["outputs"], version, classifier), id=answer_id)
    if isinstance(doc.get("predictions"), list):
        return replace(_read_predictions(doc, version, classifier), id=answer_id)
    raise UnreadableError('neither "outputs" (a list of tensors) nor "predictions"')


@dataclass(frozen=True, slots=True)
class _Tensor:
    name: str
    datatype: str
    rows: int
    width: int
    data: list[Any]

    def row_values(self) -> list[Any]:
        """Each row's first element (``[N]`` and ``[N, 1]`` alike)."""
        return self.data[:: self.width] if self.width else []

    def row_lists(self) -> list[list[Any]]:
        return [self.data[i * self.width : (i + 1) * self.width] for i in range(self.rows)]


def _tensor(raw: Any) -> _Tensor:
    if not isinstance(raw, dict):
        raise UnreadableError("an output is not an object")
    shape, data = raw.get("shape"), raw.get("data")
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise UnreadableError(f"output {raw.get('name')!r} has no shape")
    if not isinstance(data, list):
        raise UnreadableError(f"output {raw.get('name')!r} has no data")
    flat = _flatten(data)
    width = math.prod(shape[1:])
    if len(flat) != shape[0] * width:
        raise UnreadableError(f"output {raw.get('name')!r}: {len(flat)} values for shape {shape}")
    return _Tensor(str(raw.get("name", "")), str(raw.get("datatype", "")), shape[0], width, flat)


def _flatten(data: list[Any]) -> list[Any]:
    if not any(isinstance(d, list) for d in data):
        return data
    out: list[Any] = []
    for d in data:
        out.extend(_flatten(d) if isinstance(d, list) else [d])
    return out


def _read_outputs(raw: list[Any], version: str | None, classifier: bool | None) -> Answer:
    tensors = [_tensor(t) for t in raw]
    if not tensors:
        raise UnreadableError("no outputs")
    rows = tensors[0].rows
    label = _pick(tensors, "label", lambda t: t.width == 1 and bool(_LABEL_TYPES.fullmatch(t.datatype)))
    proba = _pick(
        tensors, "probabilities", lambda t: t.width > 1 and bool(_FLOAT_TYPES.fullmatch(t.datatype))
    )
    if classifier is not False and label is not None:
        return Answer(
            label.rows,
            version,
            labels=[str(v) for v in label.row_values()],
            probabilities=_numbers(proba.row_lists())
            if proba is not None and proba.rows == label.rows
            else None,
        )
    value = _pick(tensors, "prediction", lambda t: t.width == 1 and bool(_FLOAT_TYPES.fullmatch(t.datatype)))
    if value is None and classifier is False:
        value = _pick(tensors, "", lambda t: t.width == 1 and t.datatype != "BYTES")
    if value is None:
        return Answer(rows, version)
    return Answer(value.rows, version, values=[_number(v) for v in value.row_values()])


def _pick(tensors: Sequence[_Tensor], name: str, fits: Callable[[_Tensor], bool]) -> _Tensor | None:
    """The output called ``name``, else the first that ``fits``."""
    named = next((t for t in tensors if name and t.name == name), None)
    return named if named is not None else next((t for t in tensors if fits(t)), None)


def _read_predictions(doc: dict[str, Any], version: str | None, classifier: bool | None) -> Answer:
    predictions: list[Any] = doc["predictions"]
    rows = len(predictions)
    outputs = doc.get("outputs") if isinstance(doc.get("outputs"), dict) else {}
    proba = outputs.get("probabilities") if isinstance(outputs, dict) else None
    probabilities = (
        _numbers(proba)
        if isinstance(proba, list) and len(proba) == rows and all(isinstance(p, list) for p in proba)
        else None
    )
    if classifier is True or (classifier is None and all(isinstance(p, str) for p in predictions)):
        return Answer(rows, version, labels=[str(p) for p in predictions], probabilities=probabilities)
    return Answer(rows, version, values=[_number(p) for p in predictions])


def _number(value: Any) -> float | None:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _numbers(rows: list[list[Any]]) -> list[list[float]] | None:
    out = [[_number(v) for v in row] for row in rows]
    if any(v is None for row in out for v in row):
        return None
    return [[v for v in row if v is not None] for row in out]


# ---- comparing ---------------------------------------------------------------------------------


def compare(own: Answer, peer: Answer) -> Comparison | Uncomparable:
    """Row by row; a reason when no row can be compared."""
    if own.rows != peer.rows:
        return Uncomparable.MISMATCH
    if own.labels is not None:
        if peer.labels is None:
            return Uncomparable.MISMATCH
        return _compare_classes(own, peer)
    if own.values is None or peer.values is None:
        return Uncomparable.MISMATCH
    rows, missing = [], 0
    for i, (a, b) in enumerate(zip(own.values, peer.values, strict=True)):
        if a is None or b is None:
            missing += 1
            continue
        delta = abs(a - b)
        if not math.isfinite(delta):
            missing += 1
            continue
        differs = delta > RELATIVE_TOLERANCE * max(1.0, abs(a))
        rows.append(Row(i, None, delta, differs, a, b))
    return Comparison(rows, missing)


def _compare_classes(own: Answer, peer: Answer) -> Comparison:
    assert own.labels is not None and peer.labels is not None
    p, q = own.probabilities, peer.probabilities
    both = p is not None and q is not None and all(len(a) == len(b) for a, b in zip(p, q, strict=True))
    rows = []
    for i, (a, b) in enumerate(zip(own.labels, peer.labels, strict=True)):
        delta = None
        if both and p is not None and q is not None:
            delta = max((abs(x - y) for x, y in zip(p[i], q[i], strict=True)), default=0.0)
        rows.append(Row(i, a == b, delta, a != b, a, b))
    return Comparison(rows, 0)


# ---- the diff ring -----------------------------------------------------------------------------


def input_rows(
    path: str,
    body: bytes,
    indices: Sequence[int],
    scrub: Callable[[str], str],
    *,
    header_length: int | None = None,
) -> dict[int, Any]:
    """The request's rows at ``indices``: ``{input name: row}`` for ``/infer`` (binary inputs
    too), the instance for ``/predict``; each cut to ``INPUT_BYTES`` of text and passed through
    the server's redaction."""
    rows: dict[int, Any] = {}
    try:
        if path.endswith("/predict"):
            instances = orjson.loads(body)["instances"]
            picked = {i: instances[i] for i in indices}
        else:
            request = binary.decode_infer_request(body, header_length)
            picked = {i: {t.name: t.data[i].tolist() for t in request.inputs} for i in indices}
    except (ProtocolError, orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        text = scrub(body[:INPUT_BYTES].decode("utf-8", "replace"))
        return dict.fromkeys(indices, text + ("..." if len(body) > INPUT_BYTES else ""))
    for i, value in picked.items():
        text = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
        clean = scrub(text[:INPUT_BYTES])
        if len(text) > INPUT_BYTES:
            rows[i] = clean + "..."
        else:
            rows[i] = value if clean == text else clean
    return rows


class DiffRing:
    """The last ``DIFF_CAPACITY`` differing rows, newest last; bounded in count and (through
    ``INPUT_BYTES``) in size: 64 entries of a few KiB at most."""

    def __init__(self, capacity: int = DIFF_CAPACITY) -> None:
        self.capacity = capacity
        self._entries: deque[dict[str, Any]] = deque(maxlen=capacity)

    def add(self, row: Row, *, input_row: Any, peer_version: str | None, path: str, now: datetime) -> None:
        self._entries.append(
            {
                "time": now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "path": path,
                "row": row.index,
                "input": input_row,
                "stable": row.own,
                "shadow": row.peer,
                "shadow_version": peer_version,
                "delta": row.delta,
            }
        )

    def entries(self) -> list[dict[str, Any]]:
        return list(self._entries)
