"""A/B without a mesh: chosen requests go to a peer (the candidate) and its answer is returned.

Two ways to choose. Sticky user hash: the user id is read from ``--hash-header``; its bucket is the
first 8 bytes of its SHA-256 as a big-endian integer, modulo 100, so every replica (and the
operator, and a test) agrees on who is in ``--hash-range``. Matches (``--forward-match``): a header
equal to a value or matching a regex, or a cookie's value, as in ``abTest.match``.

Forwarding is bounded (at most ``MAX_CONCURRENT`` at once; beyond that the
request is answered here and counted ``dropped``), and a peer that fails or times out is counted
``failed`` and the request is answered here: forwarding can move traffic, never break it.
Forwarded requests carry ``x-rollwise-hop: forward:<token>`` (``--hop-token``, see ``mirroring``) so
the peer answers them itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from http.cookies import CookieError, SimpleCookie

import httpx
from rollwise_contract.matches import RequestMatch, compile_re2

from rollwise_serving.binary import HEADER
from rollwise_serving.config import HashRange
from rollwise_serving.metrics import ServerMetrics
from rollwise_serving.mirroring import HOP_HEADER, HopSeal

log = logging.getLogger("rollwise_serving.forwarding")
MAX_CONCURRENT = 64
TIMEOUT = httpx.Timeout(5.0, connect=0.5)


def bucket_of(user: str) -> int:
    """The user's bucket in 0..99, e.g. ``bucket_of("alice")`` is the same on every replica."""
    return int.from_bytes(hashlib.sha256(user.encode()).digest()[:8], "big") % 100


Headers = list[tuple[bytes, bytes]]


class UserHash:
    """Forward users whose bucket is in ``buckets``."""

    def __init__(self, header: str, buckets: HashRange) -> None:
        self.header = header.lower().encode("latin-1")
        self.buckets = buckets
        self.keep = frozenset({self.header})

    def wants(self, headers: Headers) -> bool:
        for name, value in headers:
            if name == self.header:
                return bucket_of(value.decode("latin-1")) in self.buckets
        return False


class Matches:
    """Forward requests matching any of ``matches``. Header names are case-insensitive, values exact;
    a regex must match the whole value, as Envoy's and Istio's RE2 matches do. The regexes are RE2
    too (the contract refused any other): linear in the header's length, so a tenant's pattern can
    never hold the event loop, whatever the client sends."""

    def __init__(self, matches: Sequence[RequestMatch]) -> None:
        self.headers = [
            (h.name.lower().encode("latin-1"), h.value, compile_re2(h.regex) if h.regex else None)
            for h in (m.header for m in matches)
            if h is not None
        ]
        self.cookies = [(c.name, c.value) for c in (m.cookie for m in matches) if c is not None]
        self.keep = frozenset({h for h, _, _ in self.headers} | ({b"cookie"} if self.cookies else set()))

    def wants(self, headers: Headers) -> bool:
        for name, raw in headers:
            if name == b"cookie" and self.cookies and self._cookie_matches(raw.decode("latin-1")):
                return True
            for header, value, regex in self.headers:
                if name != header:
                    continue
                text = raw.decode("latin-1")
                if (value is not None and text == value) or (regex is not None and regex.fullmatch(text)):
                    return True
        return False

    def _cookie_matches(self, raw: str) -> bool:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(raw)
        except CookieError:
            return False
        return any(name in jar and jar[name].value == value for name, value in self.cookies)


class Forwarder:
    def __init__(
        self, base_url: str, rule: UserHash | Matches, metrics: ServerMetrics, seal: HopSeal
    ) -> None:
        self.base_url = base_url
        self._hop = seal.value("forward")
        self.rule = rule
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)
        self._sent, self._dropped, self._failed = (metrics.forward[r] for r in ("sent", "dropped", "failed"))
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=TIMEOUT)

    def wants(self, headers: Headers) -> bool:
        return self.rule.wants(headers)

    async def forward(
        self, path: str, body: bytes, headers: list[tuple[bytes, bytes]]
    ) -> httpx.Response | None:
        """The peer's answer, or None when this server should answer itself."""
        if self._client is None or self._slots.locked():
            self._dropped.inc()
            return None
        keep = {b"content-type", HEADER, *self.rule.keep}
        out = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in keep}
        out[HOP_HEADER] = self._hop
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
