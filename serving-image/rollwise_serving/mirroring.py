"""Shadow traffic without a mesh: a copy of each inference request goes to ``--mirror-url``.

The primary answer is never delayed or changed: the handler only ``put_nowait``s onto a queue
bounded twice, at ``QUEUE_SIZE`` copies and at ``--mirror-queue-bytes`` of bodies queued or being
sent (over either -> counted ``dropped``), and a few sender tasks drain it. The byte budget is what
bounds memory: a shadow that stops answering holds every copy for the sender's timeout, and 512
copies of 1 MiB bodies would be 512 MiB. Send failures are counted ``failed`` and forgotten.

Hops. Mirrored copies carry ``x-rollwise-hop: mirror:<token>`` (forwarded ones ``forward:<token>``)
so the shadow never mirrors or forwards them again. The header is signed with ``--hop-token``, a
secret the operator gives both tracks of one ModelDeployment, because clients can send any header:
an unsigned mark would let a client opt its requests out of the shadow's comparison or out of an
A/B split. An incoming mark is honoured only when it carries the token (compared in constant
time); without a token no incoming mark is honoured at all.

Agreement. With a copy, the queue keeps the answer this pod sent (only when its own model gave
it, not the fallback; its bytes count in the budget). When the shadow answers 200, the sender
compares the two row by row (``agreement``) and records ``rollwise_shadow_*`` by the shadow's
``model_version``; differing rows go to a ring of the last 64 (``GET /v2/models/{name}/diff``),
one per worker process; with segments declared, compared and agreeing rows are also counted by
the segment value of our row (``rollwise_segment_shadow_*``). A 4xx answer or one that cannot be
read is counted ``rollwise_shadow_uncomparable_total`` for each of our rows. All of it runs in
the sender tasks, after the client has its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
from rollwise_contract.metrics import Uncomparable

from rollwise_serving.agreement import (
    Answer,
    Comparison,
    DiffRing,
    UnreadableError,
    compare,
    input_rows,
    read_answer,
)
from rollwise_serving.binary import HEADER
from rollwise_serving.metrics import ServerMetrics, ShadowSeries

log = logging.getLogger("rollwise_serving.mirroring")
HOP_HEADER = "x-rollwise-hop"
_HOP = HOP_HEADER.encode()
_HOP_KINDS = frozenset({b"mirror", b"forward"})
QUEUE_SIZE = 512
SENDERS = 4
TIMEOUT = httpx.Timeout(2.0, connect=0.5)


class HopSeal:
    """Signs this server's hops and recognises its peers' (``--hop-token``)."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        # Compared as digests, so not even the token's length shows in the comparison's timing.
        self._want = hashlib.sha256(token.encode()).digest() if token else None

    def value(self, kind: str) -> str:
        """The mark a copy of ``kind`` (mirror, forward) carries: ``mirror:<token>``; without a
        token the bare kind, which tells a reader what the copy is and which no peer honours."""
        return f"{kind}:{self.token}" if self.token else kind

    def is_hop(self, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        """Whether the request carries a mark signed with our token, i.e. a peer already sent it."""
        if self._want is None:
            return False
        for name, value in headers:
            if name != _HOP:
                continue
            kind, sep, given = value.partition(b":")
            if sep and kind in _HOP_KINDS and hmac.compare_digest(hashlib.sha256(given).digest(), self._want):
                return True
        return False


@dataclass(frozen=True, slots=True)
class _Copy:
    path: str
    body: bytes
    content_type: str
    own: bytes | None
    """The answer this pod sent, to compare with the shadow's; None: do not compare."""
    segments: np.ndarray[Any, np.dtype[np.uint8]] | None = None
    """Our rows' segment codes (``SegmentCoder``), to count the comparison per segment value."""
    header_length: int | None = None
    """The request's JSON length when it carries binary tensors (sent on with the copy)."""
    own_length: int | None = None
    """The same for our answer."""

    @property
    def size(self) -> int:
        held = len(self.body) + (len(self.own) if self.own is not None else 0)
        return held + (self.segments.nbytes if self.segments is not None else 0)


class Mirror:
    def __init__(
        self,
        base_url: str,
        metrics: ServerMetrics,
        seal: HopSeal,
        *,
        queue_bytes: int,
        scrub: Callable[[str], str] = str,
    ) -> None:
        self.base_url = base_url
        self._hop = seal.value("mirror")
        self.queue_bytes = queue_bytes
        self._held_bytes = 0
        """Bytes of the bodies (and own answers) queued or being sent; never above ``queue_bytes``."""
        self._queue: asyncio.Queue[_Copy] = asyncio.Queue(QUEUE_SIZE)
        self._metrics = metrics
        self._sent, self._dropped, self._failed = (metrics.mirror[r] for r in ("sent", "dropped", "failed"))
        self._scrub = scrub
        self.diffs = DiffRing()
        self._client: httpx.AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._client = httpx.AsyncClient(
            base_url=self.base_url, timeout=TIMEOUT, limits=httpx.Limits(max_connections=SENDERS)
        )
        self._tasks = [asyncio.create_task(self._send_forever()) for _ in range(SENDERS)]

    def offer(
        self,
        path: str,
        body: bytes,
        content_type: str,
        own: bytes | None = None,
        segments: np.ndarray[Any, np.dtype[np.uint8]] | None = None,
        *,
        header_length: int | None = None,
        own_length: int | None = None,
    ) -> None:
        """Queue a copy (and ``own``, the answer to compare with the shadow's, with its rows'
        segment codes; the lengths of the JSON parts of binary bodies); O(1), never blocks, never
        raises."""
        copy = _Copy(path, body, content_type, own, segments, header_length, own_length)
        if self._held_bytes + copy.size > self.queue_bytes:
            self._dropped.inc()
            return
        try:
            self._queue.put_nowait(copy)
        except asyncio.QueueFull:
            self._dropped.inc()
            return
        self._held_bytes += copy.size

    async def _send_forever(self) -> None:
        assert self._client is not None
        while True:
            copy = await self._queue.get()
            try:
                await self._send(copy)
            finally:
                self._held_bytes -= copy.size

    async def _send(self, copy: _Copy) -> None:
        assert self._client is not None
        headers = {"content-type": copy.content_type, HOP_HEADER: self._hop}
        if copy.header_length is not None:
            headers[HEADER.decode()] = str(copy.header_length)
        try:
            response = await self._client.post(copy.path, content=copy.body, headers=headers)
        except Exception as err:  # the shadow's trouble is never ours
            self._failed.inc()
            log.debug("mirror to %s failed: %s", self.base_url, err)
            return
        if response.status_code >= 500:
            self._failed.inc()
            return
        self._sent.inc()
        if copy.own is not None:
            try:
                self._agree(copy, response.status_code, response.content, _length(response))
            except Exception:  # a comparison bug must not stop the sender
                log.exception("comparing the shadow's answer to %s failed", copy.path)

    def _agree(self, copy: _Copy, status: int, peer_body: bytes, peer_length: int | None = None) -> None:
        """Compare our answer with the shadow's and record it (see the module docstring)."""
        assert copy.own is not None
        classifier = self._metrics.is_classifier
        try:
            own = read_answer(copy.own, classifier=classifier, header_length=copy.own_length)
        except UnreadableError:
            return  # our own answer is always readable; nothing to compare against otherwise
        if status != 200:
            self._metrics.shadow(None).uncomparable[Uncomparable.REFUSED].inc(own.rows)
            return
        try:
            peer = read_answer(peer_body, classifier=classifier, header_length=peer_length)
        except UnreadableError as err:
            self._metrics.shadow(None).uncomparable[Uncomparable.UNPARSEABLE].inc(own.rows)
            log.debug("the shadow's answer to %s is unreadable: %s", copy.path, err)
            return
        series = self._metrics.shadow(peer.version)
        result = compare(own, peer)
        if not isinstance(result, Comparison):
            series.uncomparable[result].inc(own.rows)
            return
        self._record(series, own, result)
        if copy.segments is not None and result.rows:
            agreed = [row.index for row in result.rows if row.agreed] if own.labels is not None else None
            self._metrics.count_segment_shadow(
                series.peer, copy.segments, [row.index for row in result.rows], agreed
            )
        differing = [row for row in result.rows if row.differs]
        if differing:
            indices = [row.index for row in differing]
            inputs = input_rows(copy.path, copy.body, indices, self._scrub, header_length=copy.header_length)
            now = datetime.now(UTC)
            for row in differing:
                self.diffs.add(
                    row, input_row=inputs.get(row.index), peer_version=peer.version, path=copy.path, now=now
                )

    @staticmethod
    def _record(series: ShadowSeries, own: Answer, result: Comparison) -> None:
        if result.uncomparable:
            series.uncomparable[Uncomparable.MISMATCH].inc(result.uncomparable)
        if not result.rows:
            return
        series.compared.inc(len(result.rows))
        if own.labels is not None:
            series.agreed.inc(sum(1 for row in result.rows if row.agreed))
        squares = 0.0
        for row in result.rows:
            if row.delta is not None:
                series.delta.observe(row.delta)
                squares += row.delta * row.delta
        if squares:
            series.delta_squared.inc(squares)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()


def _length(response: httpx.Response) -> int | None:
    """A binary answer's JSON length (``binary.HEADER``), or None; a bad value reads as None."""
    value = response.headers.get(HEADER.decode())
    return int(value) if value is not None and value.strip().isdigit() else None
