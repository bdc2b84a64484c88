"""Rollout gates' webhook calls: POST the ModelDeployment and the gate, 2xx means go.

A webhook URL is written by a tenant, so every call is bounded and fenced:
- one deadline for the whole call (name lookup, connect, send, answer), `timeoutSeconds`;
- the answer's body is never read: only the status line counts, so a 2 GB reply costs nothing and
  nothing of it is echoed into status or Events (a read-back SSRF needs the echo);
- calls run on the event loop (no worker thread is held) behind their own slots, with a share per
  namespace, so one tenant's slow webhooks cannot delay another's or any write;
- egress rules (`Egress`): the address the name resolves to must not be loopback, link-local
  (cloud metadata), multicast or unspecified, nor the API server, nor a range the administrator
  denies (the pod and service ranges), unless the administrator allows that host or range. The
  request then goes to the checked address (the name stays in Host and TLS SNI), so the name cannot
  resolve somewhere else between the check and the call.
- the payload carries the spec and status with every literal env value and URI credential redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

import httpx

from rollwise.kube.slots import Slots
from rollwise.plan.decision import WebhookCall
from rollwise.plan.observed import WebhookResult
from rollwise.plan.redact import redacted_body

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

SLOTS = 16
"""Webhook calls in flight at once, in all namespaces."""
SLOTS_PER_NAMESPACE = 4
"""In flight at once from one namespace: a tenant whose webhooks all hang holds at most these."""


@dataclass(frozen=True)
class Egress:
    """Where webhooks may go. Allowed hosts and ranges win over every refusal."""

    allowed_hosts: frozenset[str] = frozenset()
    """Host names (lower case) always allowed, e.g. `gate.ops.svc.cluster.local`."""
    allowed_nets: tuple[Network, ...] = ()
    denied_nets: tuple[Network, ...] = ()
    """The administrator's refusals on top of the fixed ones, e.g. the pod and service ranges."""
    api_server: frozenset[Address] = frozenset()
    """The API server's addresses: a webhook must not become a way to reach it."""

    def refusal(self, host: str, addresses: list[Address]) -> str | None:
        """Why a call to `host` at `addresses` is refused, or None when it may go."""
        if host.lower().rstrip(".") in self.allowed_hosts:
            return None
        for address in addresses:
            if any(address in net for net in self.allowed_nets):
                continue
            why = _fixed_refusal(address)
            if why is None and address in self.api_server:
                why = "the Kubernetes API server"
            if why is None and any(address in net for net in self.denied_nets):
                why = "in a range the administrator denies (webhooks.deniedCIDRs)"
            if why is not None:
                return (
                    f"{host} resolves to {address}, {why}; an administrator can allow it with the "
                    "chart's webhooks.allowedHosts or webhooks.allowedCIDRs"
                )
        return None


def _fixed_refusal(address: Address) -> str | None:
    mapped = getattr(address, "ipv4_mapped", None)
    address = mapped or address
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        return "not a unicast address"
    return None


@dataclass
class WebhookSender:
    """Every daemon's webhook calls go through one of these (kept in Kopf's memo)."""

    egress: Egress = field(default_factory=Egress)
    slots: Slots = field(default_factory=lambda: Slots(SLOTS, SLOTS_PER_NAMESPACE))
    transport: httpx.AsyncBaseTransport | None = None
    """Tests hand in a transport; None is httpx's own."""

    async def call(self, call: WebhookCall, body: Mapping[str, Any]) -> WebhookResult:
        """The answer within `timeoutSeconds` from the start of the wait for a slot: a tenant's
        queue of hanging calls times out its own calls, nobody else's."""
        try:
            async with (
                asyncio.timeout(call.timeout_seconds),
                self.slots.held(str(body["metadata"]["namespace"])),
            ):
                return await self._send(call, body)
        except TimeoutError:
            return WebhookResult(call.key, ok=False, detail=f"no answer within {call.timeout_seconds}s")

    async def _send(self, call: WebhookCall, body: Mapping[str, Any]) -> WebhookResult:
        url = urlsplit(call.url)
        host = url.hostname or ""
        try:
            port = url.port or (443 if url.scheme == "https" else 80)
        except ValueError:
            return WebhookResult(call.key, ok=False, detail="the URL's port is not a port number")
        if not host:
            return WebhookResult(call.key, ok=False, detail="the URL names no host")
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as err:
            return WebhookResult(call.key, ok=False, detail=f"{host} does not resolve ({type(err).__name__})")
        addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
        if not addresses:
            return WebhookResult(call.key, ok=False, detail=f"{host} does not resolve")
        if (why := self.egress.refusal(host, addresses)) is not None:
            return WebhookResult(call.key, ok=False, detail=f"refused: {why}")
        pinned = _pinned_url(url, addresses[0])
        headers = {"Content-Type": "application/json", "Host": url.netloc.rpartition("@")[2]}
        extensions = {"sni_hostname": host} if url.scheme == "https" else {}
        content = json.dumps(_payload(call, body))
        try:
            async with (
                httpx.AsyncClient(transport=self.transport, follow_redirects=False) as client,
                client.stream("POST", pinned, content=content, headers=headers, extensions=extensions) as r,
            ):
                status = r.status_code  # the body is never read
        except httpx.HTTPError as err:
            return WebhookResult(call.key, ok=False, detail=f"call failed: {type(err).__name__}")
        return WebhookResult(call.key, ok=200 <= status < 300, detail=f"HTTP {status}")


def _pinned_url(url: SplitResult, address: Address) -> str:
    """`url` with its host replaced by the checked address (brackets for IPv6)."""
    host = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{host}:{url.port}" if url.port else host
    return urlunsplit((url.scheme, netloc, url.path or "/", url.query, ""))


def _payload(call: WebhookCall, body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    clean = redacted_body(body)
    return {
        "name": meta["name"],
        "namespace": meta["namespace"],
        "webhook": call.key.name,
        "type": str(call.key.type),
        "revision": call.key.revision,
        "step": call.key.step,
        "spec": clean.get("spec"),
        "status": clean.get("status"),
    }


def api_server_addresses(host_url: str) -> frozenset[Address]:
    """The addresses of the API server the operator talks to (from its client's host URL)."""
    host = urlsplit(host_url).hostname or ""
    found: set[Address] = set()
    with contextlib.suppress(OSError, ValueError):
        for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM):
            found.add(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
    return frozenset(found)
