"""Kopf wiring, and nothing else: start-up settings, indices, wake-ups and one daemon per resource.

Each ModelDeployment gets a daemon that reconciles, then sleeps until something it cares about
changes (its spec or status, one of its children) or its decision asks to look again (a pause, an
analysis interval). Children are found through indices, so a pass lists nothing: an idle operator
sends no request at all, reads included, until the resync interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from typing import Any, cast

import kopf
from kopf._cogs.aiokits import aiotoggles  # private: quiet_kopf_readiness_gate rewires it
from kubernetes import client, config

from rollwise import telemetry
from rollwise.api.v1alpha1 import GROUP, PLURAL, VERSION
from rollwise.kube.observe import child_view
from rollwise.kube.reconcile import Memory, pass_inputs, reconcile
from rollwise.metrics.prometheus import CircuitBreaker, PrometheusProvider
from rollwise.plan.names import LABEL_MODEL_DEPLOYMENT
from rollwise.settings import OperatorSettings

OWNED = {LABEL_MODEL_DEPLOYMENT: kopf.PRESENT}
KOPF_GATE_FIXED_FOR = "1.45."
"""Kopf releases whose start-up gate `quiet_kopf_readiness_gate` rewires (checked again on upgrades)."""


def quiet_kopf_readiness_gate() -> bool:
    """Make Kopf's start-up cost linear in the objects it indexes, not quadratic.

    Kopf holds every object's first event until all indexed objects are listed (a ToggleSet with a
    toggle per object), and wakes every held event each time one more toggle is added or dropped:
    N² wake-ups. With 1 000 ModelDeployments (5 000 indexed objects) a restarted operator, or a
    follower taking over, spent 7 minutes of CPU before its first pass (bench/operator_scale.py;
    28 s -> 7 s at 500). Waking the waiters only when the set's aggregate state changes keeps the
    semantics: a waiter waits for that state, and `Toggle.turn_to` still wakes everyone. Applied
    only to the Kopf releases it was measured on; returns whether it was applied.
    """
    if not version("kopf").startswith(KOPF_GATE_FIXED_FOR):
        logging.getLogger(__name__).warning(
            "kopf %s: start-up gate left as is (rewired for %sx only)", version("kopf"), KOPF_GATE_FIXED_FOR
        )
        return False

    async def make_toggle(
        self: aiotoggles.ToggleSet, __val: bool = False, *, name: str | None = None
    ) -> aiotoggles.Toggle:
        toggle = aiotoggles.Toggle(__val, name=name, condition=self._condition)
        async with self._condition:
            before = self.is_on()
            self._toggles.add(toggle)
            if self.is_on() != before:
                self._condition.notify_all()
        return toggle

    async def drop_toggle(self: aiotoggles.ToggleSet, toggle: aiotoggles.Toggle) -> None:
        async with self._condition:
            before = self.is_on()
            self._toggles.discard(toggle)
            if self.is_on() != before:
                self._condition.notify_all()

    aiotoggles.ToggleSet.make_toggle = make_toggle  # type: ignore[method-assign]  # deliberate rewiring
    aiotoggles.ToggleSet.drop_toggle = drop_toggle  # type: ignore[method-assign]  # deliberate rewiring
    return True


quiet_kopf_readiness_gate()


WRITE_SLOTS = 8
"""Reconcile passes sending their writes at once (each sends its own one after the other), like a
controller's work-queue workers (Argo Rollouts runs 10). More made every write slower, not the wave
faster: the API server allocates Service IPs one at a time (bench/operator_scale.py)."""
IO_THREADS = 32
"""Worker threads for blocking calls: the write slots, analysis queries and webhooks, so that a
slow webhook or Prometheus never holds up writes (asyncio's default is cpu + 4: 6 on 2 cores)."""


def api_client() -> client.ApiClient:
    """In a pod: the service account; elsewhere: the current kubeconfig context."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]  # untyped upstream
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]  # untyped upstream
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = IO_THREADS
    return client.ApiClient(configuration)


class EssenceStorage(kopf.AnnotationsDiffBaseStorage):
    """Kopf's diff-base storage, building the same essence from less.

    On every event of every watched object Kopf deep-copies the whole body, then drops its status
    and all metadata but labels and annotations: for our Deployments, status and managedFields are
    most of the copy (a twentieth of the operator's CPU in a wave of 1 000). This copies only what
    stays. Extra fields (status fields some handlers watch) fall back to the full body; ours have none.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        extra = list(extra_fields or [])
        if extra:
            return super().build(body=body, extra_fields=extra)
        meta = body.get("metadata") or {}
        kept = {k: v for k, v in body.items() if k not in ("metadata", "status")}
        kept["metadata"] = {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta}
        return super().build(body=kopf.Body(cast(kopf.RawBody, kept)), extra_fields=extra)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    op: OperatorSettings = memo.settings
    # Our own Events say what happened; Kopf's per-handler log events would be a write per pass.
    settings.posting.enabled = False
    # Peers must differ in priority, or Kopf pauses all of them (two replicas from one template).
    settings.peering.priority = op.peering_priority
    # A killed leader is replaced once its last keep-alive is this old: the failover time.
    settings.peering.lifetime = op.peering_lifetime_seconds
    # Kopf keeps handler progress in annotations only: status belongs to our conditions.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="rollwise.dev")
    settings.persistence.diffbase_storage = EssenceStorage(
        prefix="rollwise.dev", key="last-handled-configuration"
    )
    # Reconnect watches well before proxies or the API server drop them.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    if op.log_level != "debug":
        # Kopf logs every handler call at INFO: a line per watched event, ten per ModelDeployment
        # in a wave. Our own log says what was decided; Kopf's lines come back at debug.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    memo.api = api_client()
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="rollwise-io")
    )
    memo.write_slots = asyncio.Semaphore(WRITE_SLOTS)
    # One Prometheus, one breaker: when it is down, every analysis fails fast instead of each
    # ModelDeployment hammering it with retries.
    memo.prometheus = PrometheusProvider(op.prometheus_url, breaker=CircuitBreaker())


def _children_key(namespace: str | None, labels: kopf.Labels) -> tuple[str | None, str]:
    return namespace, labels[LABEL_MODEL_DEPLOYMENT]


# Every Kopf callback below is a coroutine although none awaits: Kopf runs plain functions in a
# thread pool, and with thousands of objects each index update and wake-up queued for a thread.


async def _owned(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> Any:
    """Our children by parent: one function, one index per kind (the index id names the kwarg),
    each child as the slim view the planner reads (`child_view`)."""
    return {_children_key(namespace, labels): child_view(body)}


@kopf.index(GROUP, VERSION, PLURAL)
async def memories(namespace: str | None, name: str | None, memo: kopf.Memo, **_: Any) -> Any:
    """Each ModelDeployment's in-memory state, so a child's event can wake its parent."""
    if "rollwise" not in memo:
        memo.rollwise = Memory()
    return {(namespace, name): memo.rollwise}


def _wake(index: kopf.Index[Any, Any], key: tuple[str | None, str]) -> None:
    for memory in index.get(key, []):
        memory.wake.set()


async def _child_changed(
    namespace: str | None, labels: kopf.Labels, memories: kopf.Index[Any, Any], **_: Any
) -> None:
    _wake(memories, _children_key(namespace, labels))


def watch_children(index: str, *resource: str) -> None:
    """Index one kind of our children by parent (`index` names the daemon's kwarg), and wake the
    parent on each change: waiting for pods or a route is event-driven (the planner's timer while
    waiting is only a fallback), and reading back a Service or HPA we wrote moves a step on."""
    kopf.index(*resource, labels=OWNED, id=index)(_owned)
    kopf.on.event(*resource, labels=OWNED, id=f"{index}_changed")(_child_changed)  # type: ignore[arg-type]  # Kopf injects index kwargs its callback protocols do not list


watch_children("owned_deployments", "apps", "v1", "deployments")
watch_children("owned_services", "v1", "services")
watch_children("owned_hpas", "autoscaling", "v2", "horizontalpodautoscalers")


@kopf.on.event(GROUP, VERSION, PLURAL)  # type: ignore[arg-type]  # Kopf injects index kwargs its callback protocols do not list
async def model_deployment_changed(
    namespace: str | None, name: str | None, memories: kopf.Index[Any, Any], **_: Any
) -> None:
    _wake(memories, (namespace, name or ""))


# No on.create/update/delete handler on purpose: any of them makes Kopf keep a diff-base
# annotation on every ModelDeployment, one more write per creation and per spec change. The
# daemon below sees creation, changes and deletion (its stop reason) on its own.


# Router objects: the user's HTTPRoute / VirtualService / Ingress named in a spec (not ours, so
# indexed by name), and our own canary Ingress. Registered only for the routers this installation
# enables (settings.routers), so clusters without those CRDs or RBAC watch nothing extra.
ROUTER_RESOURCES = {
    "gatewayAPI": ("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute", ("gatewayAPI", "httpRoute")),
    "istio": ("networking.istio.io", "v1", "virtualservices", "VirtualService", ("istio", "virtualService")),
    "nginx": ("networking.k8s.io", "v1", "ingresses", "Ingress", ("nginx", "ingress")),
}


async def _router_objects_by_name(namespace: str | None, name: str | None, body: kopf.Body, **_: Any) -> Any:
    return {(namespace, body.get("kind"), name): dict(body)}


async def _router_object_changed(*, namespace: str | None, memories: kopf.Index[Any, Any], **_: Any) -> None:
    # A route's status (accepted or not) decides whether a step took effect: wake its namespace.
    for key in list(memories):
        if key[0] == namespace:
            _wake(memories, key)


def register_routers(enabled: frozenset[str]) -> None:
    for router in sorted(enabled & set(ROUTER_RESOURCES)):
        group, version, plural, _, _ = ROUTER_RESOURCES[router]
        kopf.index(group, version, plural, id=f"router_{router}")(_router_objects_by_name)
        kopf.on.event(group, version, plural, id=f"router_{router}_changed")(_router_object_changed)  # type: ignore[arg-type]  # Kopf injects index kwargs its callback protocols do not list
    if "nginx" in enabled:
        watch_children("owned_ingresses", "networking.k8s.io", "v1", "ingresses")


def router_objects_of(body: kopf.Body, indices: dict[str, Any]) -> list[Any]:
    """The live provider object the spec names, if its router is enabled and it exists."""
    traffic = ((body.get("spec") or {}).get("rollout") or {}).get("traffic") or {}
    found: list[Any] = []
    for router, (_, _, _, kind, (block, field)) in ROUTER_RESOURCES.items():
        name = (traffic.get(block) or {}).get(field)
        index = indices.get(f"router_{router}")
        if name and index is not None:
            found += list(index.get((body["metadata"]["namespace"], kind, name), []))
    return found


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10)  # type: ignore[arg-type]  # Kopf injects index kwargs its callback protocols do not list
async def steward(
    *,
    body: kopf.Body,
    namespace: str | None,
    name: str | None,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    owned_deployments: kopf.Index[Any, Any],
    owned_services: kopf.Index[Any, Any],
    owned_hpas: kopf.Index[Any, Any],
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    if "rollwise" not in memo:
        memo.rollwise = Memory()
    memory: Memory = memo.rollwise
    settings: OperatorSettings = memo.settings
    key = (namespace, name or "")
    loop = asyncio.get_running_loop()
    due = loop.time()  # when a pass is due even if nothing changes: the decision's requeue, or resync
    while not stopped:
        memory.wake.clear()
        timer = loop.time() >= due
        if memory.behind_own_write(body):
            # Our status write's event is on its way and wakes us (a pass now would plan from the
            # status before it); a timer that came due meanwhile runs with that event.
            await _woken(memory, settings.resync_seconds if timer else due - loop.time())
            continue
        children = [*owned_deployments.get(key, []), *owned_services.get(key, []), *owned_hpas.get(key, [])]
        if (owned_ingresses := kwargs.get("owned_ingresses")) is not None:
            children += owned_ingresses.get(key, [])
        routes = router_objects_of(body, kwargs)
        inputs = pass_inputs(body, children, routes, memory)
        if not timer and memory.settled == inputs:
            # Our own writes coming back, nothing else: the last decision stands.
            telemetry.RECONCILES.labels("unchanged").inc()
            await _woken(memory, due - loop.time())
            continue
        # A new ModelDeployment's first pass creates all its children: it takes its write slot
        # before planning, so that a wave of thousands waits holding no planned objects (about
        # 50 KB each, which set the operator's peak memory) and plans when its turn comes.
        # Other passes plan first: most write only a status, which needs no slot.
        first = not children
        try:
            async with memo.write_slots if first else contextlib.nullcontext():
                decision = await reconcile(
                    memo.api,
                    body,
                    children,
                    settings=settings,
                    memory=memory,
                    now=dt.datetime.now(dt.UTC),
                    router_objects=routes,
                    inputs=inputs,
                    provider=memo.prometheus,
                    write_slots=None if first else memo.write_slots,
                )
            wait = decision.requeue_after.total_seconds() if decision and decision.requeue_after else None
        except client.ApiException as err:
            telemetry.RECONCILES.labels("error").inc()
            logger.warning(f"reconcile failed, retrying in 5s: {err.status} {err.reason}: {err.body}")
            wait = 5.0
        due = loop.time() + (wait or settings.resync_seconds)
        await _woken(memory, due - loop.time())
    if stopped.reason is not None and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED:
        telemetry.PHASES.forget(namespace or "", name or "")


async def _woken(memory: Memory, timeout: float) -> None:
    """Wait for a wake-up or the timeout, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(memory.wake.wait(), timeout=max(timeout, 0.0))
