"""Sticky A/B without a mesh: requests whose user hash falls in a bucket range go to a peer.

The user id is read from ``--hash-header``; its bucket is the first 8 bytes of its SHA-256 as a
big-endian integer, modulo 100, so every replica (and the operator, and a test) agrees on who is
in ``--hash-range``. Forwarding is bounded (at most ``MAX_CONCURRENT`` at once; beyond that the
request is answered here and counted ``dropped``), and a peer that fails or times out is counted
``failed`` and the request is answered here: forwarding can move traffic, never break it.
Forwarded requests carry ``x-rollwise-hop: forward`` so the peer answers them itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

import httpx

from rollwise_serving.config import HashRange
from rollwise_serving.metrics import ServerMetrics
from rollwise_serving.mirroring import HOP_HEADER

log = logging.getLogger("rollwise_serving.forwarding")
MAX_CONCURRENT = 64
TIMEOUT = httpx.Timeout(5.0, connect=0.5)


def bucket_of(user: str) -> int:
    """The user's bucket in 0..99, e.g. ``bucket_of("alice")`` is the same on every replica."""
    return int.from_bytes(hashlib.sha256(user.encode()).digest()[:8], "big") % 100


class Forwarder:
    def __init__(self, base_url: str, header: str, buckets: HashRange, metrics: ServerMetrics) -> None:
        self.base_url = base_url
        self.header = header.lower().encode("latin-1")
        self.buckets = buckets
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)
        self._sent, self._dropped, self._failed = (metrics.forward[r] for r in ("sent", "dropped", "failed"))
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=TIMEOUT)

    def wants(self, headers: list[tuple[bytes, bytes]]) -> bool:
        for name, value in headers:
            if name == self.header:
                return bucket_of(value.decode("latin-1")) in self.buckets
        return False

    async def forward(
        self, path: str, body: bytes, headers: list[tuple[bytes, bytes]]
    ) -> httpx.Response | None:
        """The peer's answer, or None when this server should answer itself."""
        if self._client is None or self._slots.locked():
            self._dropped.inc()
            return None
        keep = {b"content-type", self.header}
        out = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in keep}
        out[HOP_HEADER] = "forward"
        async with self._slots:
            try:
                response = await self._client.post(path, content=body, headers=out)
            except Exception as err:
                self._failed.inc()
                log.debug("forward to %s failed: %s", self.base_url, err)
                return None
        if response.status_code >= 500:
            self._failed.inc()
            return None
        self._sent.inc()
        return response

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
