"""HTTP/1.1 for untrusted clients: uvicorn's httptools protocol with the bounds it lacks.

uvicorn reads headers of any size and count and waits for a request body forever: 200 stalled
uploads held 200 in-flight requests (and stretched a SIGTERM to the 10 s grace period), a
`Content-Length` longer than the body was never answered, and a 16 MB header block was accepted.
This protocol adds, per request:

- a deadline from its first byte to its last (`--request-timeout-seconds`): past it the client
  gets 408 and the connection is closed, so a slow upload cannot hold a worker or skew the
  in-flight gauge;
- a limit on the bytes of the request line and headers (`--max-header-bytes`) and on their count
  (`--max-headers`): 431, checked while parsing, before the block is buffered whole;
- at shutdown, requests still uploading are dropped at once (their clients never finished
  sending, so nothing is lost), while complete requests are answered as before.

A refused or timed-out request never reaches the app, except a body that stalls after the app has
started reading it: the app then sees a disconnect (`app.read_body` counts it as a client error).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

STATUS_TEXT = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


@dataclass(frozen=True)
class Limits:
    request_timeout_seconds: float = 10.0
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100


class _RefusedError(Exception):
    """Raised from a parser callback to stop parsing a request that broke a limit."""


class BoundedHttpProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` with `Limits`; pass as uvicorn's `http=` (set `limits` first)."""

    limits: ClassVar[Limits] = Limits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._header_count = 0
        self._refusal: tuple[int, str] | None = None

    # ---- parser callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = self._header_count = 0
        self._cancel_deadline()
        self._deadline = self.loop.call_later(self.limits.request_timeout_seconds, self._too_slow)

    def on_url(self, url: bytes) -> None:
        self._grow(len(url), 0)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow(len(name) + len(value), 1)
        super().on_header(name, value)

    def on_message_complete(self) -> None:
        self._cancel_deadline()
        super().on_message_complete()

    # ---- limits -----------------------------------------------------------------------------

    def _grow(self, size: int, count: int) -> None:
        self._header_bytes += size
        self._header_count += count
        limits = self.limits
        if self._header_bytes > limits.max_header_bytes:
            self._refuse(
                431,
                f"request line and headers are over {limits.max_header_bytes} bytes (--max-header-bytes); "
                "send smaller headers",
            )
        if self._header_count > limits.max_headers:
            self._refuse(431, f"more than {limits.max_headers} headers (--max-headers); send fewer headers")

    def _refuse(self, status: int, message: str) -> None:
        self._refusal = (status, message)
        raise _RefusedError(message)  # httptools stops parsing; uvicorn then calls send_400_response

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parse error; ours when a limit stopped the parse."""
        if self._refusal is None:
            super().send_400_response(msg)
            return
        status, message = self._refusal
        self._refusal = None
        self._answer_and_close(status, message)

    def _too_slow(self) -> None:
        """The request's deadline passed before its last byte arrived."""
        self._deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_started:
            self.transport.close()  # the app answered early (e.g. 413); just stop reading
            return
        self._answer_and_close(
            408,
            f"the request did not arrive within {self.limits.request_timeout_seconds:g} s of its first "
            "byte (--request-timeout-seconds); send the whole body promptly",
        )

    def _answer_and_close(self, status: int, message: str) -> None:
        body = orjson.dumps({"error": message})
        head = b"HTTP/1.1 %d %s\r\n" % (status, STATUS_TEXT.get(status, b"Error"))
        self.transport.write(
            head
            + b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
            + body
        )
        if self.cycle is not None:
            self.cycle.disconnected = True  # answered on the app's behalf: its sends are dropped
        self.transport.close()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    # ---- connection life ----------------------------------------------------------------------

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """Graceful shutdown: a request whose body is still arriving is dropped now; the rest as
        uvicorn does (idle connections closed, answers in progress finished)."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and cycle.more_body:
            self.transport.close()
            return
        super().shutdown()
