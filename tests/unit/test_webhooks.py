"""Webhook calls against real HTTP servers on loopback: egress refusals, one deadline, no body read
or echoed, a redacted payload, and a share of slots per namespace.

Servers listen on 127.0.0.2 (loopback, so refused by default): each test's `Egress` allows just
that address, as an administrator's `webhooks.allowedCIDRs` would.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from rollwise.api.v1alpha1 import WebhookType
from rollwise.kube.slots import Slots
from rollwise.kube.webhooks import Egress, WebhookSender
from rollwise.plan.decision import WebhookCall
from rollwise.plan.observed import WebhookKey

HOST = "127.0.0.2"
ALLOWED = Egress(allowed_nets=(ipaddress.ip_network(f"{HOST}/32"),))
BODY = {
    "metadata": {"name": "iris", "namespace": "ml"},
    "spec": {
        "model": {"uri": "https://user:hunter2@models.example/iris.onnx?X-Amz-Signature=abc"},
        "runtime": {"env": [{"name": "API_KEY", "value": "s3cr3t"}, {"name": "REF", "valueFrom": {}}]},
    },
    "status": {"stable": {"runtime": {"env": [{"name": "API_KEY", "value": "s3cr3t"}]}}},
}

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def call(url: str, timeout: int = 5, name: str = "gate") -> WebhookCall:
    return WebhookCall(WebhookKey(name, WebhookType.STEP, "rev1", 1), url, timeout)


def in_namespace(namespace: str) -> dict[str, Any]:
    return BODY | {"metadata": {"name": "iris", "namespace": namespace}}


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    return head + await reader.readexactly(length)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Start servers on 127.0.0.2 with a handler; their URLs; all closed after the test."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass  # the client hung up: what a bounded call does
            finally:
                writer.close()

        server = await asyncio.start_server(guarded, HOST, 0)
        servers.append(server)
        return f"http://{HOST}:{server.sockets[0].getsockname()[1]}/gate"

    yield start
    for s in servers:
        s.close()


def answering(status: int, body: bytes = b"", record: list[bytes] | None = None) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        if record is not None:
            record.append(request)
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()

    return handler


async def test_a_2xx_opens_the_gate_and_the_payload_carries_no_secret(serve: Any) -> None:
    record: list[bytes] = []
    url = await serve(answering(200, b"ok", record))
    result = await WebhookSender(ALLOWED).call(call(url), BODY)
    assert (result.ok, result.detail) == (True, "HTTP 200")
    request = record[0]
    assert b"Host: 127.0.0.2:" in request
    payload = json.loads(request.split(b"\r\n\r\n", 1)[1])
    assert payload["spec"]["runtime"]["env"][0] == {"name": "API_KEY", "value": "<redacted>"}
    assert payload["status"]["stable"]["runtime"]["env"][0]["value"] == "<redacted>"
    assert payload["spec"]["model"]["uri"] == "https://***@models.example/iris.onnx"
    assert b"hunter2" not in request and b"s3cr3t" not in request and b"Signature" not in request


async def test_a_refusal_is_summarised_and_its_body_never_echoed(serve: Any) -> None:
    url = await serve(answering(403, b"ami-id: i-0abc secret metadata"))
    result = await WebhookSender(ALLOWED).call(call(url), BODY)
    assert (result.ok, result.detail) == (False, "HTTP 403")


async def test_a_huge_answer_is_never_read(serve: Any) -> None:
    """The server announces 2 GB and streams it: the call ends at the status line."""

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2000000000\r\n\r\n")
        chunk = b"x" * 65536
        for _ in range(30000):  # 2 GB, unless the client hangs up first (it does)
            writer.write(chunk)
            await writer.drain()

    url = await serve(endless)
    result = await WebhookSender(ALLOWED).call(call(url, timeout=20), BODY)
    assert (result.ok, result.detail) == (True, "HTTP 200")


async def test_a_tarpit_is_cut_off_at_the_one_deadline(serve: Any) -> None:
    """A byte every half second never trips a per-read timeout; the deadline is for the whole call."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.5)

    url = await serve(trickle)
    started = time.monotonic()
    result = await WebhookSender(ALLOWED).call(call(url, timeout=2), BODY)
    assert (result.ok, result.detail) == (False, "no answer within 2s")
    assert time.monotonic() - started < 10  # the trickle alone takes 20 s


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:{port}/", "127.0.0.1, a loopback address"),
        ("http://localhost:{port}/", "a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254, a link-local address"),
        ("http://[::1]:{port}/", "::1, a loopback address"),
        ("http://0.0.0.0:{port}/", "not a unicast address"),
    ],
)
async def test_loopback_link_local_and_unspecified_are_refused_before_any_connection(
    url: str, why: str
) -> None:
    record: list[bytes] = []
    open_server = await asyncio.start_server(answering(200, record=record), "127.0.0.1", 0)
    port = open_server.sockets[0].getsockname()[1]
    try:
        result = await WebhookSender(Egress()).call(call(url.format(port=port)), BODY)
    finally:
        open_server.close()
    assert not result.ok
    assert result.detail.startswith("refused: ") and why in result.detail
    assert "webhooks.allowedHosts or webhooks.allowedCIDRs" in result.detail
    assert record == []  # nothing reached the server listening there


async def test_the_api_server_and_denied_ranges_are_refused() -> None:
    egress = Egress(
        api_server=frozenset({ipaddress.ip_address("10.0.0.1")}),
        denied_nets=(ipaddress.ip_network("10.96.0.0/12"),),
    )
    api = await WebhookSender(egress).call(call("https://10.0.0.1:6443/api"), BODY)
    assert not api.ok and "the Kubernetes API server" in api.detail
    svc = await WebhookSender(egress).call(call("http://10.96.0.10/"), BODY)
    assert not svc.ok and "webhooks.deniedCIDRs" in svc.detail


async def test_an_allowed_host_is_reached_even_on_loopback() -> None:
    record: list[bytes] = []
    server = await asyncio.start_server(answering(204, record=record), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await WebhookSender(Egress(allowed_hosts=frozenset({"localhost"}))).call(
            call(f"http://localhost:{port}/hook"), BODY
        )
    finally:
        server.close()
    assert (result.ok, result.detail) == (True, "HTTP 204")
    assert f"Host: localhost:{port}".encode() in record[0]


async def test_a_name_that_does_not_resolve_is_a_failure_not_a_crash() -> None:
    result = await WebhookSender(ALLOWED).call(call("http://no-such-host.invalid/"), BODY)
    assert not result.ok and "does not resolve" in result.detail


async def test_one_namespaces_hanging_webhooks_hold_only_its_own_slots(serve: Any) -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    hanging = await serve(hang)
    quick = await serve(answering(200))
    sender = WebhookSender(ALLOWED, slots=Slots(total=6, per_namespace=2))
    noisy = [asyncio.create_task(sender.call(call(hanging, timeout=3, name=f"h{i}"), BODY)) for i in range(8)]
    await asyncio.sleep(0.2)
    started = time.monotonic()
    other = await sender.call(call(quick, timeout=2), in_namespace("other-team"))
    waited = time.monotonic() - started
    results = await asyncio.gather(*noisy)
    assert (other.ok, other.detail) == (True, "HTTP 200")
    assert waited < 2  # it never waited for the noisy namespace's slots
    assert all(not r.ok for r in results)


@pytest.mark.parametrize(
    ("url", "detail"),
    [("http://gate:99999/", "the URL's port is not a port number"), ("http://:80/", "the URL names no host")],
)
async def test_a_url_the_pattern_lets_through_but_no_call_can_use_is_a_failure(url: str, detail: str) -> None:
    result = await WebhookSender(ALLOWED).call(call(url), BODY)
    assert (result.ok, result.detail) == (False, detail)
