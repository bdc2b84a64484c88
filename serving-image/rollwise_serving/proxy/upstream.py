"""A small HTTP/1.1 client for the one upstream beside the proxy: keep-alive connections on
asyncio protocols, responses parsed by httptools (uvicorn's parser, already in the image).

Why not httpx: measured in front of the bundled server on 2 cores, httpx's pool (httpcore over
anyio) spent most of the proxy's CPU checking its connections, and held the proxy to about 300
requests/s at concurrency 1 and 110 at 64 where the upstream alone answers about 9000; this
client is written for exactly one upstream on loopback, HTTP/1.1, no TLS, no redirects.

Bounds: at most ``max_connections`` connections (a request beyond waits for one, within the
timeout); ``timeout`` for the connection, for the answer's headers and for each read of its body
(so a stream may last as long as its chunks keep coming); reading stops while more than
``HIGH_WATER`` bytes wait for the client (a slow client never makes the proxy hold a whole
answer). A connection the upstream closed while idle fails before any byte of an answer: the
request is sent again once on a new connection, as browsers do.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Sequence
from typing import Final, cast
from urllib.parse import urlsplit

import httptools

HIGH_WATER: Final = 1 << 20
RawHeaders = list[tuple[bytes, bytes]]


class UpstreamTimeoutError(Exception):
    """The upstream did not connect or answer within the timeout."""


class UpstreamUnavailableError(Exception):
    """The upstream refused the connection, closed it, or answered what is not HTTP/1.1."""


class Headers:
    """An answer's headers: as received (``raw``), and by lower-case name (``get``)."""

    def __init__(self, raw: RawHeaders) -> None:
        self.raw = raw
        self._by_name = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._by_name.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._reset()

    def _reset(self) -> None:
        self.raw_headers: RawHeaders = []
        self.status = 0
        self.keep_alive = False
        self.headers_done = asyncio.Event()
        self.complete = False
        self.received_any = False
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._more = asyncio.Event()
        self.error: Exception | None = None

    # ---- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as err:
            self._fail(UpstreamUnavailableError(f"the upstream's answer is not HTTP/1.1: {err}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            self._fail(UpstreamUnavailableError("the upstream closed the connection before answering whole"))

    # ---- httptools callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()  # known only until the message ends
        self.headers_done.set()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        self._more.set()
        if self._buffered > HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        self.complete = True
        self._more.set()

    # ---- use -----------------------------------------------------------------------------------

    def _fail(self, err: Exception) -> None:
        if self.error is None:
            self.error = err
        self.headers_done.set()
        self._more.set()
        if self.transport is not None:
            self.transport.close()

    def send(self, head: bytes, body: bytes) -> None:
        assert self.transport is not None
        self._reset()
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)

    async def chunks(self, timeout: float) -> AsyncIterator[bytes]:
        """The body as it arrives; raises on a timeout or a connection lost mid-answer."""
        while True:
            while self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._buffered <= HIGH_WATER // 2 and self.transport is not None and not self.closed:
                    self.transport.resume_reading()
                yield chunk
            if self.complete:
                return
            if self.error is not None:
                raise self.error
            self._more.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._more.wait()
            except TimeoutError:
                self._fail(UpstreamTimeoutError("the upstream's answer stopped coming"))
                raise UpstreamTimeoutError(f"no byte of the upstream's answer for {timeout:g} s") from None

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None


class Response:
    """An answer whose headers arrived; its body is read by ``chunks`` or ``read``, then the
    connection goes back to the pool (or is closed) by ``close``."""

    def __init__(self, pool: Upstream, connection: _Connection) -> None:
        self._pool, self._connection = pool, connection
        self.status_code = connection.status
        self.headers = Headers(connection.raw_headers)
        self._released = False

    def chunks(self) -> AsyncIterator[bytes]:
        return self._connection.chunks(self._pool.timeout)

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    def close(self) -> None:
        if not self._released:
            self._released = True
            self._pool._release(self._connection)


class Upstream:
    """Keep-alive connections to one ``http://host:port``."""

    def __init__(
        self, url: str, *, max_connections: int, timeout: float, connect_timeout: float = 2.0
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"{url!r}: the upstream must be http://host:port")
        self.host, self.port = parts.hostname, parts.port or 80
        self.authority = parts.netloc.encode("latin-1")
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self._idle: collections.deque[_Connection] = collections.deque()
        self._slots = asyncio.Semaphore(max_connections)

    async def request(
        self, method: str, target: str, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> Response:
        """Send a request and wait for the answer's headers (``timeout``); the caller must
        ``close`` the response. ``headers`` must hold no hop-by-hop header, host or length."""
        head = b"".join(
            [
                f"{method} {target} HTTP/1.1\r\n".encode("latin-1"),
                b"host: ",
                self.authority,
                b"\r\ncontent-length: ",
                str(len(body)).encode(),
                b"\r\n",
                *(b"%s: %s\r\n" % (k, v) for k, v in headers),
                b"\r\n",
            ]
        )
        try:
            if self._slots.locked():  # all connections busy: wait for one, within the timeout
                async with asyncio.timeout(self.timeout):
                    await self._slots.acquire()
            else:
                await self._slots.acquire()  # returns at once
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"no connection to the upstream free within {self.timeout:g} s"
            ) from None
        try:
            response = await self._exchange(head, body)
        except BaseException:
            self._slots.release()
            raise
        if method == "HEAD":
            # an answer to HEAD has no body whatever its length says; the parser cannot know, so
            # the answer ends with its headers and the connection is not reused
            response._connection.complete = True
            response._connection.keep_alive = False
        return response

    async def _exchange(self, head: bytes, body: bytes) -> Response:
        for attempt in (0, 1):
            while self._idle and self._idle[-1].closed:
                self._idle.pop()  # the upstream closed it while idle (its keep-alive timeout)
            reused = bool(self._idle)
            connection = self._idle.pop() if reused else await self._connect()
            try:
                connection.send(head, body)
            except (OSError, RuntimeError) as err:  # a transport closed under us (uvloop raises)
                connection._fail(UpstreamUnavailableError(f"the connection to the upstream failed: {err}"))
            try:
                async with asyncio.timeout(self.timeout):
                    await connection.headers_done.wait()
            except TimeoutError:
                connection._fail(UpstreamTimeoutError("no answer"))
                raise UpstreamTimeoutError(f"the upstream did not answer within {self.timeout:g} s") from None
            if connection.error is None:
                return Response(self, connection)
            if not (reused and not connection.received_any and attempt == 0):
                raise connection.error
        raise AssertionError("unreachable")

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(_Connection, self.host, self.port)
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"no connection to the upstream within {self.connect_timeout:g} s"
            ) from None
        except OSError as err:
            raise UpstreamUnavailableError(
                f"the upstream could not be reached ({err.strerror or err})"
            ) from None
        return connection

    def _release(self, connection: _Connection) -> None:
        if connection.reusable:
            self._idle.append(connection)
        elif connection.transport is not None:
            connection.transport.close()
        self._slots.release()

    async def close(self) -> None:
        while self._idle:
            connection = self._idle.pop()
            if connection.transport is not None:
                connection.transport.close()
