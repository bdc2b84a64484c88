"""Shadow traffic without a mesh: a copy of each inference request goes to ``--mirror-url``.

The primary answer is never delayed or changed: the handler only ``put_nowait``s onto a bounded
queue (full -> counted ``dropped``) and a few sender tasks drain it. Send failures are counted
``failed`` and forgotten. Mirrored copies carry ``x-rollwise-hop: mirror`` so the shadow never
mirrors or forwards them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx

from rollwise_serving.metrics import ServerMetrics

log = logging.getLogger("rollwise_serving.mirroring")
HOP_HEADER = "x-rollwise-hop"
QUEUE_SIZE = 512
SENDERS = 4
TIMEOUT = httpx.Timeout(2.0, connect=0.5)


class Mirror:
    def __init__(self, base_url: str, metrics: ServerMetrics) -> None:
        self.base_url = base_url
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
        try:
            self._queue.put_nowait((path, body, content_type))
        except asyncio.QueueFull:
            self._dropped.inc()

    async def _send_forever(self) -> None:
        assert self._client is not None
        while True:
            path, body, content_type = await self._queue.get()
            try:
                response = await self._client.post(
                    path, content=body, headers={"content-type": content_type, HOP_HEADER: "mirror"}
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
