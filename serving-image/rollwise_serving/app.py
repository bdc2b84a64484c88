"""The HTTP surface: a raw ASGI app routing OIP v2 paths to the dataplane.

No web framework: routing is a split of the path, and a response is two ASGI messages, which
keeps per-request overhead to a few microseconds (see ``bench/README.md``). One table,
``ERRORS``, maps exception types to an HTTP status and a metrics outcome; nothing else picks
status codes for errors.

Health (what Kubernetes probes should use):

- ``GET /v2/health/live``: 200 while the process serves HTTP. It never depends on the model, so
  a slow download or a refused artifact never gets the pod restarted in a loop.
- ``GET /v2/health/ready`` (and ``/v2/models/{name}/ready``): 200 ``{"ready": true}`` only when
  the primary model is loaded *and* its digest verified; otherwise 503 with ``"reason"`` saying
  why (loading, fetch failure, digest mismatch...). The body also lists the fallback's state.

Forwarding (``--hash-*``) and mirroring (``--mirror-url``) wrap the inference routes; requests
that already made a hop (``x-rollwise-hop`` signed with ``--hop-token``) are served here and never
sent on again. A client's own hop header, unsigned or forged, is ignored. With mirroring,
``GET /v2/models/{name}/diff`` lists the last rows the shadow answered otherwise (``mirroring``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import orjson
from rollwise_contract.features import OutputKind
from rollwise_contract.metrics import Outcome

from rollwise_serving import __version__, binary, explain
from rollwise_serving.cache import PredictionCache
from rollwise_serving.config import Redactor, Settings, configure_logging, from_environ, parse_forward_match
from rollwise_serving.dataplane import Dataplane
from rollwise_serving.errors import (
    BodyTooLargeError,
    BusyError,
    DeadlineError,
    InputError,
    ModelNotFoundError,
    ModelNotReadyError,
    PredictError,
    RequestAbortedError,
)
from rollwise_serving.explain import Explainer
from rollwise_serving.features import FeatureValidationError
from rollwise_serving.feedback import ID_HEADER, Feedback, feedback_of, is_mirror_copy
from rollwise_serving.forwarding import Forwarder, Matches, UserHash
from rollwise_serving.grpc_service import GrpcServer, InferenceService
from rollwise_serving.metrics import ServerMetrics, load_signals
from rollwise_serving.mirroring import HopSeal, Mirror
from rollwise_serving.protocol import ProtocolError
from rollwise_serving.repository import Repository
from rollwise_serving.transport import BoundedHttpProtocol, Limits

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("rollwise_serving.app")

# exception type -> (HTTP status, outcome label). Order matters only for subclasses (none today).
ERRORS: Final[dict[type[Exception], tuple[int, Outcome]]] = {
    ProtocolError: (400, Outcome.CLIENT_ERROR),
    InputError: (400, Outcome.CLIENT_ERROR),
    FeatureValidationError: (422, Outcome.CLIENT_ERROR),
    BodyTooLargeError: (413, Outcome.CLIENT_ERROR),
    RequestAbortedError: (408, Outcome.CLIENT_ERROR),
    ModelNotFoundError: (404, Outcome.CLIENT_ERROR),
    ModelNotReadyError: (503, Outcome.SERVER_ERROR),
    DeadlineError: (504, Outcome.SERVER_ERROR),
    PredictError: (500, Outcome.SERVER_ERROR),
    BusyError: (429, Outcome.CLIENT_ERROR),
}
JSON: Final = [(b"content-type", b"application/json")]


def error_body(err: Exception) -> bytes:
    doc: dict[str, Any] = {"error": str(err)}
    if isinstance(err, FeatureValidationError):
        doc["error"] = f"{len(err.problems)} invalid feature value(s)"
        doc["details"] = [
            {"loc": p.loc, "feature": p.feature, "problem": p.problem.value, "msg": p.message}
            for p in err.problems
        ]
    return orjson.dumps(doc)


class ServingApp:
    """The ASGI callable. Build with ``create_app(settings)``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        schema, reference = load_signals(settings.feature_schema, settings.reference)
        self.metrics = ServerMetrics(
            model=settings.name,
            version=settings.version,
            track=settings.track.value,
            schema=schema,
            reference=reference,
        )
        # Declared classes name the class indices of formats that store no labels (XGBoost, LightGBM).
        declared = schema.output if schema else None
        self.repository = Repository(
            settings,
            class_names=declared.classes if declared and declared.kind is OutputKind.CLASSIFIER else None,
        )
        self.cache = PredictionCache(
            self.metrics,
            size=settings.cache_size,
            redis_url=settings.redis_url,
            ttl_seconds=settings.cache_ttl_seconds,
            namespace=f"rollwise:{settings.pod_namespace}:{settings.name}:{settings.version}:",
            redis_ca_file=settings.redis_ca_file,
        )
        self.feedback: Feedback = feedback_of(settings, self.metrics)
        self.dataplane = Dataplane(
            settings, self.repository, self.metrics, schema, self.cache, feedback=self.feedback
        )
        self.hops = HopSeal(settings.hop_token)
        self.mirror = (
            Mirror(
                settings.mirror_url,
                self.metrics,
                self.hops,
                queue_bytes=settings.mirror_queue_bytes,
                scrub=Redactor.of(settings).scrub,
            )
            if settings.mirror_url
            else None
        )
        self.forwarder = _forwarder(settings, self.metrics, self.hops)
        self.explainer = (
            Explainer(settings, schema.names if schema else None, reference) if settings.explain else None
        )
        self.grpc = _grpc_server(self)
        self._loader: asyncio.Task[None] | None = None
        m = self.metrics
        self._inflight, self._duration, self._requests = m.inflight, m.request_duration, m.requests

    # ---- lifespan ------------------------------------------------------------------------------

    async def startup(self) -> None:
        for gauge in self.metrics.loaded_by_role.values():
            gauge.set(0)
        self._loader = asyncio.create_task(self._load())
        if self.mirror:
            self.mirror.start()
        if self.forwarder:
            self.forwarder.start()
        if self.grpc:
            await self.grpc.start()

    async def _load(self) -> None:
        await self.repository.load()
        # Everything loaded so far (libraries, the model) lives as long as the process: take it
        # out of the collector's sight, so full collections stop costing tens of milliseconds of
        # tail latency while traffic flows.
        gc.collect()
        gc.freeze()
        primary, fallback = self.repository.primary, self.repository.fallback
        self.metrics.loaded_by_role["primary"].set(1 if primary.runtime is not None else 0)
        self.metrics.loaded_by_role["fallback"].set(1 if fallback and fallback.runtime else 0)
        runtime = primary.runtime if primary.runtime is not None else self.repository.fallback_runtime()
        if runtime is not None:
            self.metrics.bind_output(runtime.classes)
            self.feedback.bind(runtime.classes, self.metrics.classes)

    async def shutdown(self) -> None:
        if self.grpc:
            await self.grpc.stop()
        if self._loader is not None:
            self._loader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loader
        if self.mirror:
            await self.mirror.close()
        if self.forwarder:
            await self.forwarder.close()
        await self.cache.close()
        await self.feedback.close()
        self.dataplane.batcher.close()

    # ---- ASGI ----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as err:
                    await send({"type": "lifespan.startup.failed", "message": str(err)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        parts = path.strip("/").split("/")
        try:
            if parts[0] == "v2":
                if await self._v2_route(parts, method, scope, receive, send):
                    return
            elif parts == ["metrics"]:
                if method != "GET":
                    raise _MethodNotAllowedError("GET")
                await respond(
                    send, 200, self.metrics.exposition(), [(b"content-type", b"text/plain; version=0.0.4")]
                )
                return
            raise ModelNotFoundError(
                f"no route {method} {path}; see /v2 for the Open Inference Protocol routes"
            )
        except _MethodNotAllowedError as err:
            allowed = err.allowed
            body = orjson.dumps({"error": f"{method} is not allowed on {path}; use {allowed}"})
            await respond(send, 405, body, [*JSON, (b"allow", allowed.encode())])
        except Exception as err:
            status, _ = ERRORS.get(type(err), (500, Outcome.SERVER_ERROR))
            await respond(send, status, error_body(err))

    async def _v2_route(
        self, parts: list[str], method: str, scope: Scope, receive: Receive, send: Send
    ) -> bool:
        """Answer a ``/v2/...`` route; False when there is no such route."""
        if len(parts) >= 3 and parts[1] == "models":
            await self._model_route(parts[2:], method, scope, receive, send)
            return True
        if method != "GET":
            raise _MethodNotAllowedError("GET")
        if len(parts) == 1:
            await respond(send, 200, orjson.dumps(self.server_metadata()))
        elif parts[1:] == ["health", "live"]:
            await respond(send, 200, b'{"live":true}')
        elif parts[1:] == ["health", "ready"]:
            await self._ready(send)
        else:
            return False
        return True

    async def _model_route(
        self, rest: list[str], method: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        name, rest = rest[0], rest[1:]
        if len(rest) >= 2 and rest[0] == "versions":
            if rest[1] != self.settings.version:
                raise ModelNotFoundError(
                    f"model {name!r} has no version {rest[1]!r}; this server serves {self.settings.version!r}"
                )
            rest = rest[2:]
        if name != self.settings.name:
            raise ModelNotFoundError(f"no model {name!r}; this server serves {self.settings.name!r}")
        action = rest[0] if rest else ""
        if len(rest) > 1:
            raise ModelNotFoundError(f"no route {scope['path']}")
        if action in ("infer", "predict", "feedback", "explain"):
            if method != "POST":
                raise _MethodNotAllowedError("POST")
            await self._model_post(action, scope, receive, send)
        elif method != "GET":
            raise _MethodNotAllowedError("GET")
        else:
            await self._model_get(action, scope, send)

    async def _model_get(self, action: str, scope: Scope, send: Send) -> None:
        """The model's GET routes: metadata, readiness, the shadow diff ring."""
        if action == "":
            await respond(send, 200, orjson.dumps(self.dataplane.model_metadata()))
        elif action == "ready":
            await self._ready(send, model=True)
        elif action == "diff":
            await self._diff(send)
        else:
            raise ModelNotFoundError(f"no route {scope['path']}")

    async def _ready(self, send: Send, *, model: bool = False) -> None:
        body = self.repository.readiness()
        if model:
            body = {"name": self.settings.name, **body}
        await respond(send, 200 if body["ready"] else 503, orjson.dumps(body))

    async def _model_post(self, action: str, scope: Scope, receive: Receive, send: Send) -> None:
        """The model's POST routes: inference, and ground-truth labels for earlier answers."""
        if action == "feedback":
            await self._feedback(scope, receive, send)
        elif action == "explain":
            await self._explain(scope, receive, send)
        else:
            await self._inference(action, scope, receive, send)

    async def _feedback(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Ground-truth labels for earlier answers (``feedback``); a body too large or cut off is
        counted invalid like any other unreadable one."""
        try:
            body = await read_body(receive, scope["headers"], self.settings.max_body_bytes)
        except (BodyTooLargeError, RequestAbortedError):
            self.feedback.count_unreadable()
            raise
        status, answer = await self.feedback.receive(body)
        await respond(send, status, answer)

    async def _explain(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Per-feature attributions of a request's rows (``explain``); not an inference request,
        so it is not counted in ``rollwise_requests_total`` nor in the feature metrics."""
        if self.explainer is None:
            raise ModelNotFoundError(
                "explanations are off on this server; start it with --explain (spec.model.explain)"
            )
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        body = await read_body(receive, headers, self.settings.max_body_bytes)
        request = binary.decode_infer_request(body, binary.header_length(headers))
        runtime, prepared = self.dataplane.prepared(request)
        found = await self.explainer.explain(runtime, prepared, request)
        self.metrics.observe_explanation(found.method, [row["attributions"] for row in found.rows])
        names = self.metrics.feature_names or None
        await respond(send, 200, explain.encode(self.settings.name, self.settings.version, names, found))

    async def _inference(self, action: str, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        self._inflight.inc()
        outcome: Outcome | None = Outcome.SERVER_ERROR
        try:
            body = await read_body(receive, headers, self.settings.max_body_bytes)
            length = binary.header_length(headers)
            hopped = self.hops.is_hop(headers)
            if self.forwarder is not None and not hopped and self.forwarder.wants(headers):
                answer = await self.forwarder.forward(scope["path"], body, headers)
                if answer is not None:
                    outcome = None  # the peer counts it, and keeps its answer for feedback
                    await respond(send, answer.status_code, answer.content, _peer_headers(answer.headers))
                    return
            keep = not is_mirror_copy(headers)  # a shadow's answers are not the user's
            if action == "infer":
                answered = await self.dataplane.infer(body, header_length=length, keep=keep)
            else:
                answered = await self.dataplane.predict_instances(body, keep=keep)
            response, outcome, prediction_id, segments, out_length = answered
            out_headers = JSON if out_length is None else _binary_headers(out_length)
            if prediction_id is not None:
                out_headers = [*out_headers, (ID_HEADER, prediction_id.encode())]
            await respond(send, 200, response, out_headers)
            if self.mirror is not None and not hopped:
                # Only our own model's answer is compared with the shadow's, never the fallback's.
                own = response if outcome is Outcome.SUCCESS else None
                self.mirror.offer(
                    scope["path"],
                    body,
                    _content_type(headers),
                    own,
                    segments,
                    header_length=length,
                    own_length=out_length,
                )
        except Exception as err:
            status, outcome = ERRORS.get(type(err), (500, Outcome.SERVER_ERROR))
            if status == 500 and type(err) not in ERRORS:
                log.exception("unexpected error on %s", scope["path"])
            await respond(send, status, error_body(err))
        finally:
            self._inflight.dec()
            if outcome is not None:
                self._requests[outcome].inc()
                self._duration.observe(time.perf_counter() - start)

    async def _diff(self, send: Send) -> None:
        """The last rows where the shadow answered otherwise (``agreement``): this worker's ring."""
        if self.mirror is None:
            raise ModelNotFoundError("no diff: this server mirrors to no shadow (start it with --mirror-url)")
        entries = self.mirror.diffs.entries()
        doc = {
            "model_name": self.settings.name,
            "model_version": self.settings.version,
            "capacity": self.mirror.diffs.capacity,
            "worker_pid": os.getpid(),
            "entries": entries,
        }
        await respond(send, 200, orjson.dumps(doc))

    def server_metadata(self) -> dict[str, Any]:
        return {
            "name": "rollwise",
            "version": __version__,
            "extensions": ["binary_tensor_data", "rollwise_metrics", "named_features"],
        }


class _MethodNotAllowedError(Exception):
    def __init__(self, allowed: str) -> None:
        super().__init__(allowed)
        self.allowed = allowed
        """The route's methods, for the `Allow` header RFC 9110 requires with a 405."""


async def read_body(receive: Receive, headers: list[tuple[bytes, bytes]], limit: int) -> bytes:
    """The whole request body, at most `limit` bytes. A connection that closes first (a client
    that left, or one `transport` cut off for its deadline or a shutdown) is the client's doing."""
    for name, value in headers:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise BodyTooLargeError(
                f"request body of {int(value)} bytes is over the {limit}-byte limit (--max-body-bytes)"
            )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestAbortedError("the connection closed before the whole request body arrived")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(f"request body is over the {limit}-byte limit (--max-body-bytes)")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = JSON) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _binary_headers(length: int) -> list[tuple[bytes, bytes]]:
    """An answer carrying binary outputs after ``length`` bytes of JSON (``binary``)."""
    return [(b"content-type", binary.CONTENT_TYPE), (binary.HEADER, str(length).encode())]


_PEER_HEADERS: Final = (b"content-type", binary.HEADER, ID_HEADER)


def _peer_headers(headers: Any) -> list[tuple[bytes, bytes]]:
    """What a forwarded answer keeps of the peer's headers: its type, its binary JSON length and
    the id its labels are joined by; nothing else of another pod's reaches the client."""
    out = []
    for name in _PEER_HEADERS:
        value = headers.get(name.decode())
        if value is not None:
            out.append((name, value.encode("latin-1")))
    return out or list(JSON)


def _content_type(headers: list[tuple[bytes, bytes]]) -> str:
    for k, v in headers:
        if k == b"content-type":
            return v.decode("latin-1")
    return "application/json"


def create_app(settings: Settings) -> ServingApp:
    BoundedHttpProtocol.limits = limits_of(settings)
    return ServingApp(settings)


def create_app_from_env() -> ServingApp:
    """Uvicorn's factory in each worker process: settings arrive as ``ROLLWISE_*`` variables. A
    worker starts with no log handler of ours: it gets the same, redacting one."""
    settings = from_environ()
    configure_logging(settings)
    return create_app(settings)


def limits_of(settings: Settings) -> Limits:
    return Limits(
        request_timeout_seconds=settings.request_timeout_seconds,
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
    )


def _grpc_server(app: ServingApp) -> GrpcServer | None:
    """The OIP gRPC service on --grpc-port, over this app's dataplane, metrics and error table."""
    settings = app.settings
    if settings.grpc_port is None:
        return None
    service = InferenceService(
        settings,
        dataplane=app.dataplane,
        repository=app.repository,
        metrics=app.metrics,
        errors=ERRORS,
        server_metadata=app.server_metadata,
    )
    return GrpcServer(service, settings.host, settings.grpc_port, settings.max_body_bytes)


def _forwarder(settings: Settings, metrics: ServerMetrics, seal: HopSeal) -> Forwarder | None:
    """A/B forwarding to --forward-url, by user hash or by header/cookie match (config validated it)."""
    if not settings.forward_url:
        return None
    rule: Matches | UserHash
    if settings.forward_match:
        rule = Matches(parse_forward_match(settings.forward_match))
    elif settings.hash_header and settings.hash_range:
        rule = UserHash(settings.hash_header, settings.hash_range)
    else:
        return None
    return Forwarder(settings.forward_url, rule, metrics, seal)
