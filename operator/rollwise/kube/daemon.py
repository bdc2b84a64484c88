"""One ModelDeployment's daemon: reconcile, then sleep until something it cares about changes (its
spec or status, one of its children, the router's object) or its decision asks to look again (a
pause, an analysis interval), with the process-wide I/O it shares with every other daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
from kubernetes import client, config

from rollwise import telemetry
from rollwise.kube.reconcile import Behind, DaemonState, Inputs, pass_inputs, reconcile
from rollwise.kube.slots import Slots
from rollwise.kube.webhooks import Egress, WebhookSender, api_server_addresses
from rollwise.metrics.prometheus import CircuitBreaker, PrometheusProvider
from rollwise.plan.decision import Decision
from rollwise.plan.router import Router
from rollwise.settings import OperatorSettings

WRITE_SLOTS = 8
"""Reconcile passes sending their writes at once (each sends its own one after the other), like a
controller's work-queue workers (Argo Rollouts runs 10). More made every write slower, not the wave
faster: the API server allocates Service IPs one at a time (bench/operator_scale.py)."""
IO_THREADS = 32
"""Worker threads for blocking calls: the write slots and analysis queries, so that a slow
Prometheus never holds up writes (asyncio's default is cpu + 4: 6 on 2 cores). Webhooks run on
the loop, and queries behind their own slots (`kube/slots.py`), so neither can take them all."""

QUERY_SLOTS = 12
"""Analysis queries in flight at once (each holds a worker thread until Prometheus answers or its
deadline passes), leaving the other threads to writes."""
QUERY_SLOTS_PER_NAMESPACE = 4
"""Of those, from one namespace: one tenant's heavy queries wait for each other, not for anyone else."""


def api_client() -> client.ApiClient:
    """In a pod: the service account; elsewhere: the current kubeconfig context."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]  # untyped upstream
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]  # untyped upstream
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = IO_THREADS
    return client.ApiClient(configuration)


def start_io(memo: kopf.Memo, op: OperatorSettings) -> None:
    """What every daemon shares: the API client, the worker threads, the write slots, Prometheus."""
    memo.api = api_client()
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="rollwise-io")
    )
    memo.write_slots = asyncio.Semaphore(WRITE_SLOTS)
    # One Prometheus, one breaker: when it is down, every analysis fails fast instead of each
    # ModelDeployment hammering it with retries.
    memo.prometheus = PrometheusProvider(op.prometheus_url, breaker=CircuitBreaker())
    memo.query_slots = Slots(QUERY_SLOTS, QUERY_SLOTS_PER_NAMESPACE)
    memo.webhooks = WebhookSender(
        Egress(
            allowed_hosts=op.webhook_allowed_hosts,
            allowed_nets=op.webhook_allowed_cidrs,
            denied_nets=op.webhook_denied_cidrs,
            api_server=api_server_addresses(memo.api.configuration.host),
        )
    )


def owned_index(plural: str) -> str:
    """The Kopf index (and daemon kwarg) of our children of one kind: `owned_deployments`."""
    return f"owned_{plural}"


def edited_index(router: Router) -> str:
    """The Kopf index of the user objects a router edits, by (namespace, kind, name)."""
    return f"router_{router.name.value}"


def daemon_state(memo: kopf.Memo) -> DaemonState:
    """This ModelDeployment's state between passes (Kopf gives each object its own memo copy)."""
    if "daemon_state" not in memo:
        memo.daemon_state = DaemonState()
    state: DaemonState = memo.daemon_state
    return state


def children_of(key: tuple[str | None, str], indices: Mapping[str, Any]) -> list[Any]:
    """Our children of every watched kind, from the indices."""
    found: list[Any] = []
    for index_id, index in indices.items():
        if index_id.startswith("owned_") and index is not None:
            found += list(index.get(key, []))
    return found


def edited_objects_of(
    body: Mapping[str, Any], routers: list[Router], indices: Mapping[str, Any]
) -> list[Any]:
    """The live user objects the spec names (an HTTPRoute, ...), for the routers this installation
    watches."""
    traffic = ((body.get("spec") or {}).get("rollout") or {}).get("traffic") or {}
    namespace = body["metadata"]["namespace"]
    found: list[Any] = []
    for router in routers:
        edits, index = router.edits, indices.get(edited_index(router))
        if edits is None or index is None:
            continue
        if name := edits.name_in(traffic):
            found += list(index.get((namespace, edits.resource.kind, name), []))
    return found


async def run(
    *,
    body: kopf.Body,
    namespace: str | None,
    name: str | None,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    """Passes until the object goes away. `kwargs` are Kopf's, its indices among them: our children
    of each kind (`owned_*`) and the objects the enabled routers (`memo.routers`) edit."""
    state = daemon_state(memo)
    settings: OperatorSettings = memo.settings
    key = (namespace, name or "")
    loop = asyncio.get_running_loop()
    due = loop.time()  # when a pass is due even if nothing changes: the decision's requeue, or resync
    while not stopped:
        state.wake.clear()
        timer = loop.time() >= due
        children = children_of(key, kwargs)
        routes = edited_objects_of(body, memo.routers, kwargs)
        inputs = pass_inputs(body, children, routes, state)
        if not timer and state.settled == inputs:
            # Our own writes coming back, nothing else: the last decision stands.
            telemetry.RECONCILES.labels("unchanged").inc()
            await _woken(state, due - loop.time())
            continue
        try:
            decision = await _pass(memo, body, children, routes, inputs)
        except client.ApiException as err:
            telemetry.RECONCILES.labels("error").inc()
            logger.warning(f"reconcile failed, retrying in 5s: {err.status} {err.reason}: {err.body}")
            due = loop.time() + 5.0
            await _woken(state, 5.0)
            continue
        if isinstance(decision, Behind):
            # Our status write's event is on its way and wakes us (a pass now would plan from the
            # status before it); a timer that came due meanwhile runs with that event.
            await _woken(state, settings.resync_seconds if timer else due - loop.time())
            continue
        wait = decision.requeue_after.total_seconds() if decision and decision.requeue_after else None
        due = loop.time() + (wait or settings.resync_seconds)
        await _woken(state, due - loop.time())
    if stopped.reason is not None and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED:
        telemetry.PHASES.forget(namespace or "", name or "")


async def _pass(
    memo: kopf.Memo, body: kopf.Body, children: list[Any], routes: list[Any], inputs: Inputs
) -> Decision | Behind | None:
    """A new ModelDeployment's first pass creates all its children: it takes its write slot before
    planning, so that a wave of thousands waits holding no planned objects (about 50 KB each, which
    set the operator's peak memory) and plans when its turn comes. Other passes plan first: most
    write only a status, which needs no slot."""
    first = not children
    async with memo.write_slots if first else contextlib.nullcontext():
        return await reconcile(
            memo.api,
            body,
            children,
            settings=memo.settings,
            memory=daemon_state(memo),
            now=dt.datetime.now(dt.UTC),
            router_objects=routes,
            inputs=inputs,
            provider=memo.prometheus,
            write_slots=None if first else memo.write_slots,
            webhooks=memo.webhooks,
            query_slots=memo.query_slots,
        )


async def _woken(state: DaemonState, timeout: float) -> None:
    """Wait for a wake-up or the timeout, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(state.wake.wait(), timeout=max(timeout, 0.0))
