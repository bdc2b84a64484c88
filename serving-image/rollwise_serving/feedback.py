"""Ground-truth labels joined to the predictions they judge (#15): ids, kept predictions, the join.

Every answer carries an id (the request's OIP ``id``, else 16 random hex characters), in its JSON
and in the ``x-rollwise-prediction-id`` header. For ``--feedback-retention-seconds`` the server
keeps what it answered under that id: its version and track, each row's predicted class (or
value) and, for a classifier whose classes are known and few, the class probabilities as float32;
with segments declared, each row's segment value indices too (a byte per segment per row), so a
label is also counted per segment value (``rollwise_segment_label*``) on any pod that declares the
segment alike (the codes are named by feature and a digest of the segment's values).
A label sent later to ``POST /v2/models/{name}/feedback`` is joined to its row and counted under
the labels of the track that *made* the prediction, whichever pod receives it, so each track's
accuracy, error and log loss come from the same counters on every pod.

Where predictions are kept, and why two places:

- in process, at most ``--feedback-max-predictions`` rows (oldest evicted first; expired ones go
  first). A row costs a few bytes (a class code, its probabilities), an id about 200 bytes, so
  the store is a dict of id -> one ``bytearray`` instead of objects per row;
- in Redis (``--feedback-redis-url``, default ``--redis-url``), under
  ``rollwise:<namespace>:<model>:feedback:<id>`` with a TTL of the retention, so a label reaching
  any replica of either track finds its prediction. The key has no version: both tracks of a
  model share it. A hash: field ``p`` is the prediction (``encode``), ``l:<row>`` marks a labelled
  row (HSETNX: the first label stands, on whichever replica). Redis is never a dependency of an
  answer: writes are queued, bounded and sent by one background task in pipelines; a failure
  drops them and leaves Redis alone for a second. Each worker process keeps its own in-process
  store, so with ``--workers`` > 1 or several replicas only Redis joins reliably.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import struct
import sys
import time
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import orjson
from rollwise_contract.metrics import FeedbackResult
from rollwise_contract.model import Track

from rollwise_serving.config import Settings
from rollwise_serving.metrics import ServerMetrics
from rollwise_serving.mirroring import HOP_HEADER

log = logging.getLogger("rollwise_serving.feedback")

ID_HEADER: Final = b"x-rollwise-prediction-id"
MAX_ID_CHARS: Final = 128
"""Longer ids (or ids with spaces or control characters) are echoed in the JSON as OIP wants, but
not kept and not sent as a header: a header must stay one clean line."""
MAX_ITEMS: Final = 1000
"""Items per feedback call: a call is handled on the event loop (about 20 µs an item), so a full
one delays inference on this worker by some 20 ms at most."""
MAX_PROBABILITY_CLASSES: Final = 32
"""Probabilities are kept for classifiers with at most this many classes (128 bytes a row)."""
MAX_OPEN_LABELS: Final = 1024
"""Distinct predicted labels remembered for a classifier whose classes are not declared."""
NOT_A_CLASS: Final = 0xFFFF
MIN_PROBABILITY: Final = 1e-15

REDIS_TIMEOUT_SECONDS: Final = 0.5
"""Feedback is not on the answer's path: a pipeline of up to MAX_ITEMS look-ups may take longer
than the cache's 50 ms."""
REDIS_BACKOFF_SECONDS: Final = 1.0
MAX_QUEUED_WRITES: Final = 4096
WRITES_PER_PIPELINE: Final = 256

_BIG_ENDIAN: Final = sys.byteorder == "big"
ENTRY_FORMAT: Final = b"rwf1"
_HEAD = struct.Struct("<dIBBB")
_CODE_BYTES: Final = [struct.pack("<H", code) for code in range(MAX_OPEN_LABELS)]
"""A class code as the payload stores it, for the one-row answer's fast path."""
"""A kept entry's head: created (monotonic seconds), rows, kind (1 classifier, 0 regressor),
probability columns (0 without), segments (bytes per row of segment codes, 0 without)."""


def new_id() -> str:
    return os.urandom(8).hex()


def is_mirror_copy(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether a request is a copy mirrored to this (shadow) server: its answer is not kept. The
    user got the primary's answer under the same id, and one id keeps one answer per model, so a
    shadow's would take the label from the track that served it. Signed or not: a client that
    marks its own request only opts itself out of feedback."""
    hop = HOP_HEADER.encode()
    return any(name == hop and value.partition(b":")[0] == b"mirror" for name, value in headers)


def is_keepable(prediction_id: str) -> bool:
    """Whether an id can be kept and sent back as a header: 1..MAX_ID_CHARS visible ASCII."""
    return (
        0 < len(prediction_id) <= MAX_ID_CHARS
        and prediction_id.isascii()
        and prediction_id.isprintable()
        and " " not in prediction_id
    )


@dataclass(frozen=True, slots=True)
class Kept:
    """One kept prediction, however it was stored: what the join needs."""

    version: str
    track: str
    rows: int
    labels: tuple[str, ...] | None
    """The classes the codes name (None: a regressor)."""
    closed: bool
    """``labels`` is the model's whole class set: a label outside it is refused."""
    codes: np.ndarray[Any, Any] | None
    values: np.ndarray[Any, Any] | None
    probabilities: np.ndarray[Any, Any] | None
    """rows x len(labels), columns in ``labels`` order; None when the model gave none."""
    segments: np.ndarray[Any, Any] | None = None
    """rows x len(segment_keys) uint8: each row's value index per segment (``SegmentCoder``)."""
    segment_keys: tuple[str, ...] = ()
    """Each column's segment (``ServerMetrics.segment_keys``: feature and a digest of its values)."""


# ---- the Redis value ----------------------------------------------------------------------------


def encode(kept: Kept) -> bytes:
    """A prediction as one self-describing value, readable by any replica of either track. Open
    classes (none declared) travel as the labels this prediction names, not all labels seen."""
    if not kept.closed and kept.labels is not None and kept.codes is not None:
        kept = _own_labels(kept)
    head = orjson.dumps(
        {
            "version": kept.version,
            "track": kept.track,
            "rows": kept.rows,
            "labels": list(kept.labels) if kept.labels is not None else None,
            "closed": kept.closed,
            "probabilities": kept.probabilities is not None,
            "segments": list(kept.segment_keys) if kept.segments is not None else [],
        }
    )
    parts = [ENTRY_FORMAT, len(head).to_bytes(4, "big"), head]
    if kept.codes is not None:
        parts.append(kept.codes.astype("<u2", copy=False).tobytes())
        if kept.probabilities is not None:
            parts.append(kept.probabilities.astype("<f4").tobytes())
    elif kept.values is not None:
        parts.append(kept.values.astype("<f8").tobytes())
    if kept.segments is not None:
        parts.append(np.ascontiguousarray(kept.segments, np.uint8).tobytes())  # last: rows x segments
    return b"".join(parts)


def _own_labels(kept: Kept) -> Kept:
    assert kept.labels is not None and kept.codes is not None
    used, inverse = np.unique(kept.codes, return_inverse=True)
    named = [int(c) for c in used if c != NOT_A_CLASS]
    table = np.array([named.index(int(c)) if c != NOT_A_CLASS else NOT_A_CLASS for c in used], np.uint16)
    labels = tuple(kept.labels[c] for c in named)
    return Kept(
        kept.version,
        kept.track,
        kept.rows,
        labels,
        False,
        table[inverse],
        None,
        None,
        kept.segments,
        kept.segment_keys,
    )


def decode(value: bytes) -> Kept | None:
    """The prediction ``encode`` made, or None for anything else (another format, a broken value)."""
    start = len(ENTRY_FORMAT) + 4
    if not value.startswith(ENTRY_FORMAT) or len(value) < start:
        return None
    size = int.from_bytes(value[len(ENTRY_FORMAT) : start], "big")
    try:
        head = orjson.loads(value[start : start + size])
        rows, labels, track = int(head["rows"]), head["labels"], str(head["track"])
        payload = memoryview(value)[start + size :]
        if track not in {t.value for t in Track} or rows < 1:
            return None
        names = tuple(str(n) for n in head.get("segments", ()))  # absent before segments (#15)
        segments = None
        if names:
            width = rows * len(names)
            segments = np.frombuffer(payload, np.uint8, width, len(payload) - width).reshape(rows, -1)
        if labels is None:
            values = np.frombuffer(payload, "<f8", rows)
            return Kept(str(head["version"]), track, rows, None, False, None, values, None, segments, names)
        labels = tuple(str(c) for c in labels)
        codes = np.frombuffer(payload, "<u2", rows)
        probabilities = None
        if head["probabilities"]:
            probabilities = np.frombuffer(payload, "<f4", rows * len(labels), 2 * rows).reshape(rows, -1)
        return Kept(
            str(head["version"]),
            track,
            rows,
            labels,
            bool(head["closed"]),
            codes,
            None,
            probabilities,
            segments,
            names,
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


# ---- in process ---------------------------------------------------------------------------------


class PredictionStore:
    """Predictions of this process by id, bounded in rows and in time (see the module docstring).

    An entry is one ``bytearray``: ``_HEAD``, one labelled flag per row, the rows' segment codes
    (rows x segments bytes), then the payload (uint16 class codes and float32 probabilities, or
    float64 values). Ids in ``_order`` are in insertion
    order; an id answered again replaces its entry and leaves a stale copy there (``_stale``),
    skipped when it comes up for eviction.
    """

    def __init__(
        self,
        *,
        max_rows: int,
        retention_seconds: float,
        version: str,
        track: str,
        segment_keys: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_rows = max_rows
        self.segment_keys = tuple(segment_keys)
        self.retention_seconds = retention_seconds
        self.version, self.track = version, track
        self.clock = clock
        self.rows = 0
        self._entries: dict[str, bytearray] = {}
        self._order: deque[str] = deque()
        self._stale: dict[str, int] = {}
        self._labels: tuple[str, ...] = ()
        """The classes codes name: the model's (closed), or the labels seen so far (open)."""
        self._closed = False
        self._columns = False
        self._codes: dict[str, int] = {}
        self._writes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def bind(self, classes: Sequence[str] | None, *, columns: bool) -> None:
        """The model's classes once known: ``columns`` says its probabilities come in that order
        (the runtime's own classes), so log loss can read them; declared classes only close the set."""
        if classes:
            self._labels = tuple(str(c) for c in classes)
            self._closed = True
            self._columns = columns and len(self._labels) <= MAX_PROBABILITY_CLASSES
            self._codes = {c: i for i, c in enumerate(self._labels)}

    # ---- writing ----

    def keep(
        self,
        prediction_id: str,
        labels: np.ndarray[Any, Any] | None,
        scores: np.ndarray[Any, Any] | None,
        probabilities: np.ndarray[Any, Any] | None,
        segments: np.ndarray[Any, Any] | None = None,
        *,
        describe: bool = False,
    ) -> Kept | None:
        """Keep one answer under its id; with ``describe``, also return it as a ``Kept`` (for
        Redis). Built straight into the entry's bytes: this runs for every answer."""
        encoded = self._payload(labels, scores, probabilities)
        if encoded is None:
            return None
        rows, columns, payload = encoded
        if rows > self.max_rows or not rows:
            return None
        width = len(self.segment_keys)
        if segments is None or segments.shape != (rows, width):
            width = 0
        codes = np.ascontiguousarray(segments, np.uint8).tobytes() if width else b""
        head = _HEAD.pack(self.clock(), rows, labels is not None, columns, width)
        entry = bytearray(head + bytes(rows) + codes + payload)
        entries = self._entries
        old = entries.get(prediction_id)
        if old is not None:
            self.rows -= _HEAD.unpack_from(old)[1]
            self._stale[prediction_id] = self._stale.get(prediction_id, 0) + 1
        entries[prediction_id] = entry
        self._order.append(prediction_id)
        self.rows += rows
        self._writes += 1
        if self.rows > self.max_rows or self._stale or not self._writes & 0xFF:
            self._evict()
        return self._view(entry) if describe else None

    def _payload(
        self,
        labels: np.ndarray[Any, Any] | None,
        scores: np.ndarray[Any, Any] | None,
        probabilities: np.ndarray[Any, Any] | None,
    ) -> tuple[int, int, bytes] | None:
        """(rows, probability columns, payload bytes), or None when there is nothing to keep."""
        if labels is not None:
            rows = len(labels)
            if rows == 1 and (code := self._codes.get(labels[0], NOT_A_CLASS)) < len(_CODE_BYTES):
                payload = _CODE_BYTES[code]  # one row of a known class: the usual answer
            else:
                codes = array("H", self._code(labels.tolist()))
                if _BIG_ENDIAN:
                    codes.byteswap()
                payload = codes.tobytes()
            columns = len(self._labels)
            if self._columns and probabilities is not None and probabilities.shape == (rows, columns):
                return rows, columns, payload + probabilities.astype("<f4").tobytes()
            return rows, 0, payload
        if scores is not None and len(scores):
            values = scores.astype("<f8").ravel()
            return len(values), 0, values.tobytes()
        return None

    def _code(self, labels: list[Any]) -> list[int]:
        codes = self._codes
        try:
            return [codes[label] for label in labels]  # str labels of known classes: the usual case
        except (KeyError, TypeError):
            pass
        out = []
        for label in labels:
            text = label if isinstance(label, str) else str(label)
            code = codes.get(text)
            if code is None:
                code = NOT_A_CLASS
                if not self._closed and len(codes) < MAX_OPEN_LABELS:
                    code = codes[text] = len(codes)
                    self._labels = (*self._labels, text)
            out.append(code)
        return out

    def _evict(self) -> None:
        """Oldest first: while over the row bound, and (looked at every 256 writes, which is
        enough to free memory and cheaper than a clock read each time) while the oldest expired."""
        expiring = not self._writes & 0xFF
        horizon = self.clock() - self.retention_seconds if expiring else -math.inf
        while self._order:
            oldest = self._order[0]
            if (
                self.rows <= self.max_rows
                and oldest not in self._stale
                and (not expiring or _HEAD.unpack_from(self._entries[oldest])[0] >= horizon)
            ):
                return
            self._order.popleft()
            stale = self._stale.get(oldest)
            if stale:
                if stale == 1:
                    del self._stale[oldest]
                else:
                    self._stale[oldest] = stale - 1
                continue
            self.rows -= _HEAD.unpack_from(self._entries.pop(oldest))[1]

    # ---- reading ----

    def get(self, prediction_id: str) -> Kept | None:
        entry = self._entries.get(prediction_id)
        if entry is None or _HEAD.unpack_from(entry)[0] < self.clock() - self.retention_seconds:
            return None
        return self._view(entry)

    def _view(self, entry: bytearray) -> Kept:
        _, rows, classifier, columns, width = _HEAD.unpack_from(entry)
        offset = _HEAD.size + rows
        segments = None
        names: tuple[str, ...] = ()
        if width:
            segments = np.frombuffer(entry, np.uint8, rows * width, offset).reshape(rows, width)
            names = self.segment_keys
            offset += rows * width
        if not classifier:
            values = np.frombuffer(entry, "<f8", rows, offset)
            return Kept(self.version, self.track, rows, None, False, None, values, None, segments, names)
        codes = np.frombuffer(entry, "<u2", rows, offset)
        probabilities = None
        if columns:
            probabilities = np.frombuffer(entry, "<f4", rows * columns, offset + 2 * rows).reshape(
                rows, columns
            )
        return Kept(
            self.version,
            self.track,
            rows,
            self._labels,
            self._closed,
            codes,
            None,
            probabilities,
            segments,
            names,
        )

    def holds(self, prediction_id: str) -> bool:
        return prediction_id in self._entries

    def mark(self, prediction_id: str, row: int) -> bool:
        """Mark a row labelled; False when it already was (or is no longer kept)."""
        entry = self._entries.get(prediction_id)
        if entry is None:
            return True  # not kept here: another replica's, judged by Redis
        flag = _HEAD.size + row
        if entry[flag]:
            return False
        entry[flag] = 1
        return True


# ---- in Redis -----------------------------------------------------------------------------------


class SharedPredictions:
    """Predictions in Redis for every replica of either track (see the module docstring)."""

    def __init__(self, url: str, *, prefix: str, ttl_seconds: int, ca_file: Path | None = None) -> None:
        import redis.asyncio  # noqa: PLC0415 - only when configured

        tls: dict[str, Any] = {}
        if url.startswith("rediss://"):
            tls = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
            if ca_file is not None:
                tls["ssl_ca_certs"] = str(ca_file)
        self._redis: Any = redis.asyncio.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS, **tls
        )
        self.prefix = prefix.encode()
        self.ttl_seconds = ttl_seconds
        self._queue: deque[tuple[bytes, bytes]] = deque()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._down_until = 0.0

    def key(self, prediction_id: str) -> bytes:
        return self.prefix + prediction_id.encode()

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def offer(self, prediction_id: str, value: bytes) -> None:
        """Queue a write; dropped while Redis is down or the queue is full (never waits)."""
        if not self.available or len(self._queue) >= MAX_QUEUED_WRITES:
            return
        self._queue.append((self.key(prediction_id), value))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())
        self._wake.set()

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(WRITES_PER_PIPELINE, len(self._queue)))]
                pipe = self._redis.pipeline(transaction=False)
                for key, value in batch:
                    # A reused id starts afresh: its old labelled marks go with the old prediction.
                    pipe.delete(key)
                    pipe.hset(key, "p", value)
                    pipe.expire(key, self.ttl_seconds)
                try:
                    await pipe.execute()
                except Exception as err:  # Redis is optional: drop what is queued, back off
                    self.failed(err)
                    self._queue.clear()

    async def fetch(self, ids: Sequence[str]) -> list[bytes | None]:
        """The kept value of each id (None where there is none); raises when Redis fails."""
        pipe = self._redis.pipeline(transaction=False)
        for prediction_id in ids:
            pipe.hget(self.key(prediction_id), "p")
        return [bytes(v) if v is not None else None for v in await pipe.execute()]

    async def mark(self, rows: Sequence[tuple[str, int]]) -> list[bool | None]:
        """Mark rows labelled: True the first time, False for a duplicate, None when the prediction
        expired meanwhile (HSETNX then made a key without TTL, which is removed at once)."""
        pipe = self._redis.pipeline(transaction=False)
        for prediction_id, row in rows:
            key = self.key(prediction_id)
            pipe.hsetnx(key, f"l:{row}", 1)
            pipe.ttl(key)
        replies = await pipe.execute()
        out: list[bool | None] = []
        orphans = []
        for (prediction_id, _), first, ttl in zip(rows, replies[::2], replies[1::2], strict=True):
            if ttl == -1:
                orphans.append(self.key(prediction_id))
                out.append(None)
            else:
                out.append(bool(first))
        if orphans:
            await self._redis.delete(*orphans)
        return out

    def failed(self, err: Exception) -> None:
        if self.available:
            log.warning(
                "feedback redis unavailable (%s); going on without it for %.0fs", err, REDIS_BACKOFF_SECONDS
            )
        self._down_until = time.monotonic() + REDIS_BACKOFF_SECONDS

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
        await self._redis.aclose()


# ---- the feedback route ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Item:
    index: int
    path: str
    id: str
    row: int | None
    label: str | None
    value: float | None


@dataclass(slots=True)
class Outcome:
    result: FeedbackResult
    error: str | None = None


class FeedbackBodyError(ValueError):
    """The body as a whole cannot be read (HTTP 400)."""


_KEYS: Final = frozenset({"id", "row", "label", "value"})
_STATUS: Final = {
    FeedbackResult.JOINED: 200,
    FeedbackResult.UNMATCHED: 404,
    FeedbackResult.DUPLICATE: 409,
    FeedbackResult.INVALID: 422,
}


class Feedback:
    """Keeps this server's answers and joins the labels sent for them."""

    def __init__(
        self,
        metrics: ServerMetrics,
        store: PredictionStore,
        shared: SharedPredictions | None,
    ) -> None:
        self.metrics = metrics
        self.store = store
        self.shared = shared
        self.enabled = store.max_rows > 0

    def bind(self, runtime_classes: Sequence[str] | None, declared: Sequence[str]) -> None:
        """The classes once the model is loaded: the runtime's own come in its probabilities'
        order; declared ones (the feature schema) only close the set of labels accepted."""
        if runtime_classes:
            self.store.bind(runtime_classes, columns=True)
        elif declared:
            self.store.bind(declared, columns=False)

    def count_unreadable(self) -> None:
        self.metrics.feedback_results[FeedbackResult.INVALID].inc()

    async def close(self) -> None:
        if self.shared is not None:
            await self.shared.close()

    def record(
        self,
        prediction_id: str,
        labels: np.ndarray[Any, Any] | None,
        scores: np.ndarray[Any, Any] | None,
        probabilities: np.ndarray[Any, Any] | None,
        segments: np.ndarray[Any, Any] | None = None,
    ) -> None:
        """Keep one answer under its id (the hot path: a dict insert and, with Redis, a queued write)."""
        if not self.enabled:
            return
        shared = self.shared is not None and self.shared.available
        kept = self.store.keep(prediction_id, labels, scores, probabilities, segments, describe=shared)
        if kept is not None and self.shared is not None:
            self.shared.offer(prediction_id, encode(kept))

    async def receive(self, body: bytes) -> tuple[int, bytes]:
        """A feedback body -> (HTTP status, JSON answer), every item counted by its result."""
        counts = self.metrics.feedback_results
        try:
            single, items = parse_items(body)
        except FeedbackBodyError as err:
            counts[FeedbackResult.INVALID].inc()
            return 400, orjson.dumps({"error": str(err)})
        outcomes = await self._join(items)
        results = []
        for index, (item, outcome) in enumerate(zip(items, outcomes, strict=True)):
            counts[outcome.result].inc()
            doc: dict[str, Any] = {"index": index, "result": outcome.result.value}
            if isinstance(item, Item):
                doc["id"] = item.id
                if item.row is not None:
                    doc["row"] = item.row
            if outcome.error:
                doc["error"] = outcome.error
            results.append(doc)
        summary = {r.value: sum(o.result is r for o in outcomes) for r in FeedbackResult}
        answer: dict[str, Any] = {**summary, "results": results}
        if single:
            status = _STATUS[outcomes[0].result]
            if outcomes[0].error:
                answer["error"] = outcomes[0].error
        else:
            failed = len(outcomes) - summary[FeedbackResult.JOINED.value]
            status = 200 if not failed else 207
            if failed:
                answer["error"] = f"{failed} of {len(outcomes)} items were not joined; see results"
        return status, orjson.dumps(answer)

    async def _join(self, items: Sequence[Item | Outcome]) -> list[Outcome]:
        outcomes: list[Outcome | None] = [i if isinstance(i, Outcome) else None for i in items]
        valid = [i for i in items if isinstance(i, Item)]
        found, redis_failed = await self._find({i.id for i in valid})
        candidates: list[tuple[Item, Kept, int]] = []
        for item in valid:
            kept = found.get(item.id)
            if kept is None:
                outcomes[item.index] = Outcome(FeedbackResult.UNMATCHED, self._unmatched(item, redis_failed))
                continue
            row, problem = check_item(item, kept)
            if problem is not None:
                outcomes[item.index] = Outcome(FeedbackResult.INVALID, problem)
            else:
                candidates.append((item, kept, row))
        fresh = await self._mark(candidates)
        for (item, kept, row), first in zip(candidates, fresh, strict=True):
            if first is None:
                outcomes[item.index] = Outcome(FeedbackResult.UNMATCHED, self._unmatched(item, False))
            elif not first:
                outcomes[item.index] = Outcome(
                    FeedbackResult.DUPLICATE,
                    f"{item.path}: the prediction {item.id!r} row {row} already has a label; "
                    "the first one stands",
                )
            else:
                self._count(kept, row, item)
                outcomes[item.index] = Outcome(FeedbackResult.JOINED)
        return [o if o is not None else Outcome(FeedbackResult.INVALID, "not handled") for o in outcomes]

    async def _find(self, ids: set[str]) -> tuple[dict[str, Kept | None], bool]:
        """Each id's prediction, here or in Redis; and whether Redis failed to say."""
        found: dict[str, Kept | None] = {i: self.store.get(i) for i in ids} if self.enabled else {}
        missing = [i for i in ids if found.get(i) is None]
        if not missing or self.shared is None or not self.enabled:
            return found, False
        if not self.shared.available:
            return found, True
        try:
            values = await self.shared.fetch(missing)
        except Exception as err:
            self.shared.failed(err)
            return found, True
        for prediction_id, value in zip(missing, values, strict=True):
            found[prediction_id] = decode(value) if value is not None else None
        return found, False

    async def _mark(self, candidates: Sequence[tuple[Item, Kept, int]]) -> list[bool | None]:
        """Whether each row is labelled for the first time: Redis decides across replicas when it
        answers, and this process's own marks too (they hold what was labelled while it was down)."""
        shared: list[bool | None] | None = None
        if candidates and self.shared is not None and self.shared.available:
            try:
                shared = await self.shared.mark([(item.id, row) for item, _, row in candidates])
            except Exception as err:
                self.shared.failed(err)
        out: list[bool | None] = []
        for n, (item, _, row) in enumerate(candidates):
            local = self.store.mark(item.id, row)
            if shared is not None and shared[n] is None and not self.store.holds(item.id):
                out.append(None)
            else:
                out.append(local and (shared is None or shared[n] is not False))
        return out

    def _unmatched(self, item: Item, redis_failed: bool) -> str:
        if not self.enabled:
            return f"{item.path}.id: this server keeps no predictions (--feedback-max-predictions 0)"
        text = (
            f"{item.path}.id: no prediction {item.id!r} is kept: unknown, older than "
            f"--feedback-retention-seconds ({self.store.retention_seconds:g}) or evicted "
            f"(--feedback-max-predictions {self.store.max_rows})"
        )
        if redis_failed:
            text += "; Redis (--feedback-redis-url) did not answer: send it again later"
        elif self.shared is None:
            text += "; this server shares no predictions with other replicas (set --feedback-redis-url)"
        return text

    def _count(self, kept: Kept, row: int, item: Item) -> None:
        series = self.metrics.quality(kept.version, kept.track)
        series.labelled.inc()
        segments = (
            list(zip(kept.segment_keys, kept.segments[row].tolist(), strict=True))
            if kept.segments is not None
            else []
        )
        if kept.values is not None and item.value is not None:
            error = abs(item.value - float(kept.values[row]))
            series.abs_error.inc(error)
            series.squared_error.inc(error * error)
            self.metrics.count_segment_label(kept.version, kept.track, segments, error=error)
            return
        if kept.codes is None or kept.labels is None or item.label is None:
            self.metrics.count_segment_label(kept.version, kept.track, segments)
            return
        code = int(kept.codes[row])
        correct = code < len(kept.labels) and kept.labels[code] == item.label
        self.metrics.count_segment_label(kept.version, kept.track, segments, correct=correct)
        if correct:
            series.correct.inc()
        if kept.probabilities is not None:
            column = kept.labels.index(item.label)
            p = min(max(float(kept.probabilities[row, column]), MIN_PROBABILITY), 1.0)
            loss = -math.log(p)
            series.log_loss.inc(loss)
            series.log_loss_squared.inc(loss * loss)
            series.with_probabilities.inc()


class FeedbackSettings(Protocol):
    """What ``feedback_of`` reads: ``Settings``, and the signals proxy's (``proxy.config``)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def track(self) -> Track: ...
    @property
    def pod_namespace(self) -> str: ...
    @property
    def redis_url(self) -> str | None: ...
    @property
    def redis_ca_file(self) -> Path | None: ...
    @property
    def feedback_redis_url(self) -> str | None: ...
    @property
    def feedback_max_predictions(self) -> int: ...
    @property
    def feedback_retention_seconds(self) -> int: ...


def feedback_of(settings: Settings | FeedbackSettings, metrics: ServerMetrics) -> Feedback:
    """The store and, with a Redis URL, its shared twin, as the settings ask."""
    store = PredictionStore(
        max_rows=settings.feedback_max_predictions,
        retention_seconds=settings.feedback_retention_seconds,
        version=settings.version,
        track=settings.track.value,
        segment_keys=metrics.segment_keys,
    )
    url = settings.feedback_redis_url or settings.redis_url
    shared = None
    if url and settings.feedback_max_predictions > 0:
        shared = SharedPredictions(
            url,
            prefix=f"rollwise:{settings.pod_namespace}:{settings.name}:feedback:",
            ttl_seconds=settings.feedback_retention_seconds,
            ca_file=settings.redis_ca_file,
        )
    return Feedback(metrics, store, shared)


def parse_items(body: bytes) -> tuple[bool, list[Item | Outcome]]:
    """(whether the body was one object, each item read or refused); raises FeedbackBodyError."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise FeedbackBodyError(
            f'the body is not valid JSON ({err}); send {{"id": ..., "label": ...}} or a list of them'
        ) from err
    single = isinstance(doc, dict)
    if single:
        doc = [doc]
    if not isinstance(doc, list) or not doc:
        raise FeedbackBodyError(
            'the body must be an object {"id": ..., "label" | "value": ..., "row": ...} '
            "or a non-empty list of them"
        )
    if len(doc) > MAX_ITEMS:
        raise FeedbackBodyError(
            f"{len(doc)} items is over the {MAX_ITEMS} a call takes; send them in several calls"
        )
    return single, [read_item(i, "item" if single else f"[{i}]", raw) for i, raw in enumerate(doc)]


def read_item(index: int, path: str, raw: Any) -> Item | Outcome:
    """One item, or the INVALID outcome naming its first problem."""

    def invalid(text: str) -> Outcome:
        return Outcome(FeedbackResult.INVALID, f"{path}{text}")

    if not isinstance(raw, dict):
        return invalid(': must be an object {"id": ..., "label" | "value": ..., "row": ...}')
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        return invalid(f': unknown key(s) {unknown}; an item has "id", "label" or "value", and "row"')
    prediction_id = raw.get("id")
    if not isinstance(prediction_id, str) or not prediction_id:
        return invalid(
            '.id: missing or not a string; send the "id" of the answer '
            "(or its x-rollwise-prediction-id header)"
        )
    row = raw.get("row")
    if row is not None and (type(row) is not int or row < 0):
        return invalid(f".row: {row!r} is not a row index; use an integer from 0")
    if ("label" in raw) == ("value" in raw):
        return invalid(
            ': give exactly one of "label" (a classifier\'s class) or "value" (a regressor\'s number)'
        )
    if "label" in raw:
        label = raw["label"]
        if type(label) not in (str, int):
            return invalid(f".label: {label!r} is not a class; send the class as a string (or an integer)")
        return Item(index, path, prediction_id, row, str(label), None)
    value = raw["value"]
    if type(value) not in (int, float) or not math.isfinite(value):
        return invalid(f".value: {value!r} is not a finite number; send the true value as a number")
    return Item(index, path, prediction_id, row, None, float(value))


def check_item(item: Item, kept: Kept) -> tuple[int, str | None]:
    """The row an item labels, and what is wrong with it against the prediction it names."""
    row = item.row if item.row is not None else 0
    if item.row is None and kept.rows > 1:
        return (
            row,
            f"{item.path}.row: missing; the prediction {item.id!r} has {kept.rows} rows: "
            f'name one with "row": 0 to {kept.rows - 1}',
        )
    if row >= kept.rows:
        return (
            row,
            f"{item.path}.row: {row} is out of range; the prediction {item.id!r} has "
            f"{kept.rows} row(s), 0 to {kept.rows - 1}",
        )
    if kept.labels is None:
        if item.label is not None:
            return (
                row,
                f'{item.path}.label: the prediction {item.id!r} is a regressor\'s; send "value": <number>',
            )
        assert kept.values is not None
        if not math.isfinite(float(kept.values[row])):
            return (
                row,
                f"{item.path}: the prediction {item.id!r} row {row} was not a finite number; "
                "it cannot be scored",
            )
        return row, None
    if item.label is None:
        return row, f'{item.path}.value: the prediction {item.id!r} is a classifier\'s; send "label": <class>'
    if kept.closed and item.label not in kept.labels:
        shown = list(kept.labels[:10]) + (["..."] if len(kept.labels) > 10 else [])
        return (
            row,
            f"{item.path}.label: {item.label!r} is not one of the model's classes {shown}; send one of them",
        )
    return row, None
