"""The proxy's ASGI app: every request goes on to ``--upstream``; inference requests are counted,
timed and observed on the way with the bundled server's own pieces (``ServerMetrics``, the
feature schema's check, ``mirroring.Mirror``, ``forwarding.Forwarder``, ``HopSeal``), so its
``/metrics`` is the bundled server's contract, series for series.

Routes of its own, which never reach the upstream:

- ``GET /metrics``: the metrics (``docs/metrics.md``), where the operator's scrape looks;
- ``GET /rollwise/live``: 200 while the proxy serves;
- ``GET /rollwise/ready``: 200 when the upstream answers ``GET <ready path>`` with a 2xx, else 503
  with the reason: the readiness probe, for every protocol.

Outcomes follow the upstream's status as the bundled server's follow its own: 2xx ``success``,
4xx ``client_error`` (404, another model's route, is not counted), 5xx ``server_error``, and an
upstream that cannot be reached (502) or is too slow (504) a ``server_error`` too. A streamed
answer's latency runs to its last byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace
from typing import Any, Final

import httpx
import orjson
from rollwise_contract.features import OutputKind
from rollwise_contract.metrics import Outcome

from rollwise_serving.app import ERRORS, Receive, Scope, Send, error_body, read_body, respond
from rollwise_serving.config import HashRange, parse_forward_match
from rollwise_serving.feedback import feedback_of
from rollwise_serving.forwarding import MAX_CONCURRENT, TIMEOUT, Forwarder, Matches, UserHash
from rollwise_serving.metrics import ServerMetrics, load_signals
from rollwise_serving.mirroring import HOP_HEADER, HopSeal, Mirror
from rollwise_serving.proxy.config import Protocol, ProxySettings
from rollwise_serving.proxy.http_json import HttpJson
from rollwise_serving.proxy.observe import FLUSH_SECONDS, Adapter, Headers, Observer, Seen
from rollwise_serving.proxy.oip_grpc import GrpcProxy
from rollwise_serving.proxy.oip_rest import OipRest
from rollwise_serving.proxy.openai import OpenAi
from rollwise_serving.proxy.upstream import Headers as UpstreamHeaders
from rollwise_serving.proxy.upstream import Response, Upstream, UpstreamTimeoutError, UpstreamUnavailableError

log = logging.getLogger("rollwise_serving.proxy")

HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"expect",
    }
)
"""Headers of one connection (RFC 9110 7.6.1), not of the message: never passed on. The length
is set again by whoever writes the body; ``expect: 100-continue`` was the proxy's to answer (it
has the whole body before it sends any)."""
EVENT_STREAM: Final = "text/event-stream"


class UpstreamError(Exception):
    """The upstream could not be reached (502) or did not answer in time (504)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ClientLeftError(Exception):
    """The client closed its connection during a streamed answer: a client error, as a gRPC call
    the client cancels is in the bundled server."""


class StreamCutError(Exception):
    """The upstream's stream broke off after its answer began: the client's stream just ends."""


class ProxyApp:
    """The ASGI callable. Build with ``ProxyApp(settings)``."""

    def __init__(self, settings: ProxySettings) -> None:
        self.settings = settings
        schema, reference = load_signals(settings.feature_schema, settings.reference)
        self.metrics = ServerMetrics(
            model=settings.name,
            version=settings.version,
            track=settings.track.value,
            schema=schema,
            reference=reference,
        )
        # Labels are joined for oip-rest, whose answers carry the ids they are sent for.
        self.feedback = (
            feedback_of(settings, self.metrics)
            if settings.protocol is Protocol.OIP_REST and settings.feedback_max_predictions > 0
            else None
        )
        declared = schema.output if schema else None
        if self.feedback is not None and declared is not None and declared.kind is OutputKind.CLASSIFIER:
            self.feedback.bind(None, declared.classes or [])
        self.observer = Observer(self.metrics, schema, self.feedback)
        self.openai: OpenAi | None = None
        self.adapter: Adapter
        if settings.protocol is Protocol.OPENAI:
            self.adapter = self.openai = OpenAi(self.metrics.bind_llm())
        elif settings.protocol is Protocol.HTTP_JSON:
            assert settings.prediction_path is not None  # parse_proxy_settings requires it
            self.adapter = HttpJson(self.observer, settings.prediction_path, settings.features_path)
        else:
            self.adapter = OipRest(self.observer, settings.name)
        self.hops = HopSeal(settings.hop_token)
        self.mirror = (
            Mirror(settings.mirror_url, self.metrics, self.hops, queue_bytes=settings.mirror_queue_bytes)
            if settings.mirror_url
            else None
        )
        self.forwarder = _forwarder(settings, self.metrics, self.hops)
        self.grpc = (
            GrpcProxy(
                address=f"{settings.host}:{settings.grpc_port}",
                name=settings.name,
                upstream=settings.grpc_upstream,
                metrics=self.metrics,
                observer=self.observer,
                timeout=float(settings.upstream_timeout_seconds),
                max_message_bytes=settings.max_body_bytes,
            )
            if settings.grpc_port is not None and settings.grpc_upstream
            else None
        )
        self._flusher: asyncio.Future[None] | None = None
        self.peer: Upstream | None = None
        """The A/B peer for streamed OpenAI answers, passed on as they come (``Forwarder`` reads
        an answer whole: right for JSON, wrong for a stream)."""
        self.upstream: Upstream | None = None
        # The upstream answers the readiness probe with a model loaded: nothing to load here, but
        # the gauge is part of the contract (`model_loaded` query), so it follows readiness.
        self.metrics.loaded_by_role["primary"].set(0)
        self.metrics.loaded_by_role["fallback"].set(0)

    # ---- lifespan ------------------------------------------------------------------------------

    async def _flush_every(self, seconds: float) -> None:
        """Held rows observed at least this often, whether or not traffic comes."""
        while True:
            await asyncio.sleep(seconds)
            try:
                self.observer.flush()
            except Exception:  # a bad batch must not stop the timer
                log.exception("observing the held rows failed")

    async def startup(self) -> None:
        s = self.settings
        self._flusher = asyncio.ensure_future(self._flush_every(FLUSH_SECONDS))
        self.upstream = Upstream(
            s.upstream, max_connections=s.max_connections, timeout=float(s.upstream_timeout_seconds)
        )
        if self.grpc is not None:
            await self.grpc.start()
        if self.mirror:
            self.mirror.start()
        if self.forwarder:
            self.forwarder.start()
            if self.openai is not None and s.forward_url:
                self.peer = Upstream(
                    s.forward_url, max_connections=MAX_CONCURRENT, timeout=TIMEOUT.read or 5.0
                )

    async def shutdown(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        self.observer.flush()
        if self.grpc is not None:
            await self.grpc.stop()
        if self.mirror:
            await self.mirror.close()
        if self.forwarder:
            await self.forwarder.close()
        if self.peer is not None:
            await self.peer.close()
        if self.upstream is not None:
            await self.upstream.close()
        if self.feedback is not None:
            await self.feedback.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await self.startup()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    # ---- routes --------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if method == "GET" and path == "/metrics":
            self.observer.flush()
            await respond(
                send, 200, self.metrics.exposition(), [(b"content-type", b"text/plain; version=0.0.4")]
            )
        elif method == "GET" and path == "/rollwise/live":
            await respond(send, 200, b'{"live":true}')
        elif method == "GET" and path == "/rollwise/ready":
            await self._ready(send)
        elif self.feedback is not None and OipRest.is_feedback(method, path):
            await self._feedback(scope, receive, send)
        elif self.adapter.is_inference(method, path):
            await self._inference(scope, receive, send)
        else:
            await self._pass(scope, receive, send)

    async def _ready(self, send: Send) -> None:
        assert self.upstream is not None
        path = self.settings.ready_path
        try:
            async with asyncio.timeout(2.0):
                response = await self.upstream.request("GET", path, [], b"")
                try:
                    await response.read()
                finally:
                    response.close()
            ready = 200 <= response.status_code < 300
            reason = f"upstream answered GET {path} with {response.status_code}"
        except (TimeoutError, UpstreamTimeoutError, UpstreamUnavailableError) as err:
            ready, reason = False, f"upstream GET {path} failed: {err}"
        self.metrics.loaded_by_role["primary"].set(1 if ready else 0)
        body: dict[str, Any] = {"ready": ready, "upstream": self.settings.upstream}
        if not ready:
            body["reason"] = reason
        await respond(send, 200 if ready else 503, orjson.dumps(body))

    async def _feedback(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Labels for answers this proxy kept, joined as the bundled server joins its own."""
        assert self.feedback is not None
        try:
            body = await read_body(receive, scope["headers"], self.settings.max_body_bytes)
        except Exception as err:
            self.feedback.count_unreadable()
            status, _ = _error_status(err)
            await respond(send, status, error_body(err))
            return
        status, answer = await self.feedback.receive(body)
        await respond(send, status, answer)

    async def _pass(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Any other route: on to the upstream and back, uncounted."""
        try:
            body = await read_body(receive, scope["headers"], self.settings.max_body_bytes)
            await self._exchange(scope, body, None, send, start=time.perf_counter(), receive=receive)
        except (StreamCutError, ClientLeftError):
            pass  # the answer began; its stream ends early
        except Exception as err:
            status, _ = _error_status(err)
            await respond(send, status, error_body(err))

    async def _inference(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        headers: Headers = scope["headers"]
        m = self.metrics
        m.inflight.inc()
        outcome: Outcome | None = Outcome.SERVER_ERROR
        try:
            body = await read_body(receive, headers, self.settings.max_body_bytes)
            hopped = self.hops.is_hop(headers)
            forward = self.forwarder is not None and not hopped and self.forwarder.wants(headers)
            if forward and await self._forwarded(scope, body, send, start=start, receive=receive):
                outcome = None  # the peer counts it
                return
            seen = self.adapter.request(body, headers)
            status, answer_body, answer_headers = await self._exchange(
                scope, body, seen, send, start=start, receive=receive
            )
            outcome = _outcome(status)
            if self.mirror is not None and not hopped and 200 <= status < 300:
                own = answer_body if isinstance(self.adapter, OipRest) and status == 200 else None
                length = answer_headers.get("inference-header-content-length") if answer_headers else None
                self.mirror.offer(
                    _target(scope),
                    body,
                    _header(headers, b"content-type") or "application/json",
                    own,
                    seen.codes,
                    header_length=_int(_header(headers, b"inference-header-content-length")),
                    own_length=_int(length),
                )
        except ClientLeftError:
            outcome = Outcome.CLIENT_ERROR
        except StreamCutError as err:
            outcome = Outcome.SERVER_ERROR  # its status was sent already; the stream is cut short
            log.warning("the upstream's stream on %s broke off: %s", scope["path"], err)
        except Exception as err:
            status, outcome = _error_status(err)
            if status == 500:
                log.exception("unexpected error on %s", scope["path"])
            await respond(send, status, error_body(err))
        finally:
            m.inflight.dec()
            if outcome is not None:
                m.requests[outcome].inc()
                m.request_duration.observe(time.perf_counter() - start)

    async def _forwarded(
        self, scope: Scope, body: bytes, send: Send, *, start: float, receive: Receive
    ) -> bool:
        """An A/B request for the peer: True when the peer answered it (streamed OpenAI answers
        passed on as they come, others read whole by ``Forwarder``), False to answer here."""
        assert self.forwarder is not None
        headers: Headers = scope["headers"]
        if self.openai is not None and self.openai.request(body, headers).stream:
            return await self._forward_stream(scope, body, send, start=start, receive=receive)
        answer = await self.forwarder.forward(_target(scope), body, headers)
        if answer is None:
            return False
        await respond(send, answer.status_code, answer.content, _forwarded_headers(answer))
        return True

    async def _forward_stream(
        self, scope: Scope, body: bytes, send: Send, *, start: float, receive: Receive
    ) -> bool:
        """A streamed request for the A/B peer, its answer passed on chunk by chunk, counted in
        ``rollwise_forward_total`` as ``Forwarder`` counts; False (answer here) when the peer
        fails or answers 5xx before its stream begins."""
        assert self.forwarder is not None and self.peer is not None
        keep = {b"content-type", *self.forwarder.rule.keep}
        out = [(k, v) for k, v in scope["headers"] if k in keep]
        out.append((HOP_HEADER.encode(), self.hops.value("forward").encode()))
        counts = self.metrics.forward
        try:
            response = await self.peer.request("POST", _target(scope), out, body)
        except (UpstreamTimeoutError, UpstreamUnavailableError) as err:
            counts["failed"].inc()
            log.debug("forward to the peer failed: %s", err)
            return False
        try:
            if response.status_code >= 500:
                counts["failed"].inc()
                return False
            counts["sent"].inc()
            if (response.headers.get("content-type") or "").startswith(EVENT_STREAM):
                with contextlib.suppress(StreamCutError, ClientLeftError):
                    await self._stream(response, None, send, start, receive)
            else:
                content = await response.read()
                await respond(send, response.status_code, content, _response_headers(response, len(content)))
            return True
        finally:
            response.close()

    async def _exchange(
        self, scope: Scope, body: bytes, seen: Seen | None, send: Send, *, start: float, receive: Receive
    ) -> tuple[int, bytes, UpstreamHeaders | None]:
        """Send the request on and the answer back: streamed when the upstream streams (SSE),
        else whole and then observed (``seen``: an inference request's, None for other routes).
        Returns the status, the whole answer (empty when streamed) and its headers."""
        assert self.upstream is not None
        out = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP]
        try:
            response = await self.upstream.request(scope["method"], _target(scope), out, body)
        except UpstreamTimeoutError as err:
            raise UpstreamError(504, str(err)) from err
        except UpstreamUnavailableError as err:
            raise UpstreamError(502, str(err)) from err
        try:
            if (response.headers.get("content-type") or "").startswith(EVENT_STREAM):
                await self._stream(response, seen, send, start, receive)
                return response.status_code, b"", response.headers
            try:
                content = await response.read()
            except UpstreamTimeoutError as err:
                raise UpstreamError(504, str(err)) from err
            except UpstreamUnavailableError as err:
                raise UpstreamError(502, str(err)) from err
            if self.openai is not None and seen is not None and response.status_code == 200:
                seen = replace(seen, seconds=time.perf_counter() - start)
                self.openai.series.first_token.observe(seen.seconds)
            await respond(send, response.status_code, content, _response_headers(response, len(content)))
            if seen is not None and "content-encoding" not in response.headers:
                try:
                    self.adapter.answer(seen, response.status_code, content, response.headers)
                except Exception:  # reading a copy must never fail the request
                    log.exception("observing the answer to %s failed", scope["path"])
            return response.status_code, content, response.headers
        finally:
            response.close()

    async def _stream(
        self, response: Response, seen: Seen | None, send: Send, start: float, receive: Receive
    ) -> None:
        """Chunks on as they arrive, each read by the openai adapter on its way (never held). Once
        the first is sent, a failure can only cut the stream: the client sees it end early. A
        client that leaves stops the stream at the next chunk, and the upstream's connection is
        closed, so a generating model stops too (llama.cpp's and vLLM's servers abort on it)."""
        reader = self.openai.stream(start) if self.openai is not None and seen is not None else None
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": _response_headers(response, None),
            }
        )
        cut: Exception | None = None
        left = asyncio.ensure_future(_disconnected(receive))
        try:
            async for chunk in response.chunks():
                if left.done():
                    raise ClientLeftError("the client left during the stream")
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if reader is not None:
                    reader.feed(chunk, time.perf_counter())
        except (UpstreamTimeoutError, UpstreamUnavailableError) as err:
            cut = err
        finally:
            left.cancel()
            if reader is not None:
                reader.close(time.perf_counter())
        await send({"type": "http.response.body", "body": b""})
        if cut is not None:
            raise StreamCutError(str(cut)) from cut


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone (the body was read already: nothing else can come)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _target(scope: Scope) -> str:
    query: bytes = scope.get("query_string", b"")
    path: str = scope["path"]
    return path + ("?" + query.decode("latin-1") if query else "")


def _response_headers(response: Response, length: int | None) -> list[tuple[bytes, bytes]]:
    """The upstream's headers but its connection's; ``length`` of the raw body read whole (None:
    streamed, the length left to the chunked encoding)."""
    out = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP]
    if length is not None:
        out.append((b"content-length", str(length).encode()))
    return out


def _forwarded_headers(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    """A peer's answer as the forwarder read it (decoded): its headers but the encoding's."""
    out = [
        (k.lower(), v)
        for k, v in response.headers.raw
        if k.lower() not in HOP_BY_HOP and k.lower() != b"content-encoding"
    ]
    return [*out, (b"content-length", str(len(response.content)).encode())]


def _outcome(status: int) -> Outcome | None:
    if status == 404:
        return None  # not this model's route: the bundled server does not count it either
    if status < 400:
        return Outcome.SUCCESS
    return Outcome.CLIENT_ERROR if status < 500 else Outcome.SERVER_ERROR


def _error_status(err: Exception) -> tuple[int, Outcome]:
    if isinstance(err, UpstreamError):
        return err.status, Outcome.SERVER_ERROR
    return ERRORS.get(type(err), (500, Outcome.SERVER_ERROR))


def _header(headers: Headers, name: bytes) -> str | None:
    for k, v in headers:
        if k == name:
            text: str = v.decode("latin-1")
            return text
    return None


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.strip().isdigit() else None


def _forwarder(settings: ProxySettings, metrics: ServerMetrics, seal: HopSeal) -> Forwarder | None:
    """A/B forwarding to --forward-url, by user hash or by match (the settings checked the pair)."""
    if not settings.forward_url:
        return None
    rule: Matches | UserHash
    if settings.forward_match:
        rule = Matches(parse_forward_match(settings.forward_match))
    elif settings.hash_header and isinstance(settings.hash_range, HashRange):
        rule = UserHash(settings.hash_header, settings.hash_range)
    else:
        return None
    return Forwarder(settings.forward_url, rule, metrics, seal)
