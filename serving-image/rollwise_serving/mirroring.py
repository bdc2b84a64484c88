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
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections.abc import Sequence

import httpx

from rollwise_serving.metrics import ServerMetrics

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


class Mirror:
    def __init__(self, base_url: str, metrics: ServerMetrics, seal: HopSeal, *, queue_bytes: int) -> None:
        self.base_url = base_url
        self._hop = seal.value("mirror")
        self.queue_bytes = queue_bytes
        self._held_bytes = 0
        """Bytes of the bodies queued or being sent; never above ``queue_bytes``."""
        self._queue: asyncio.Queue[tuple[str, bytes, str]] = asyncio.Queue(QUEUE_SIZE)
        self._sent, self._dropped, self._failed = (metrics.mirror[r] for r in ("sent", "dropped", "failed"))
        self._client: httpx.AsyncClient | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._client = httpx.AsyncClient(
            base_url=self.base_url, timeout=TIMEOUT, limits=httpx.Limits(max_connections=SENDERS)
        )
        self._tasks = [asyncio.create_task(self._send_forever()) for _ in range(SENDERS)]

    def offer(self, path: str, body: bytes, content_type: str) -> None:
        """Queue a copy; O(1), never blocks, never raises."""
        if self._held_bytes + len(body) > self.queue_bytes:
            self._dropped.inc()
            return
        try:
            self._queue.put_nowait((path, body, content_type))
        except asyncio.QueueFull:
            self._dropped.inc()
            return
        self._held_bytes += len(body)

    async def _send_forever(self) -> None:
        assert self._client is not None
        while True:
            path, body, content_type = await self._queue.get()
            try:
                await self._send(path, body, content_type)
            finally:
                self._held_bytes -= len(body)

    async def _send(self, path: str, body: bytes, content_type: str) -> None:
        assert self._client is not None
        try:
            response = await self._client.post(
                path, content=body, headers={"content-type": content_type, HOP_HEADER: self._hop}
            )
            if response.status_code >= 500:
                self._failed.inc()
            else:
                self._sent.inc()
        except Exception as err:  # the shadow's trouble is never ours
            self._failed.inc()
            log.debug("mirror to %s failed: %s", self.base_url, err)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()
