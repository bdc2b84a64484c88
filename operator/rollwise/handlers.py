"""Kopf wiring, and nothing else: what the operator watches, and which function each event runs.

Read it as a table of contents:
- start-up: Kopf tuned (`kube/kopf_tuning.py`), the shared I/O started (`kube/daemon.py`);
- indices: our children of each kind by parent, and each router's user object by name;
- wake-ups: any change of a child, a router's object or the ModelDeployment wakes its daemon;
- one daemon per ModelDeployment (`kube/daemon.run`), which reconciles (`kube/reconcile.py`);
- one daemon per running ModelBatchJob, woken by its Job's changes (`kube/batch.run_batch`).

Children are found through indices, so a pass lists nothing: an idle operator sends no request at
all, reads included, until the resync interval.
"""

from __future__ import annotations

from typing import Any

import kopf

from rollwise.api import batch as batch_api
from rollwise.api.v1alpha1 import GROUP, PLURAL, VERSION
from rollwise.kube import batch, daemon
from rollwise.kube.kopf_tuning import quiet_kopf_readiness_gate, tune
from rollwise.kube.observe import child_view
from rollwise.plan import batch as batch_plan
from rollwise.plan.names import LABEL_MODEL_DEPLOYMENT
from rollwise.plan.router import Resource
from rollwise.routers import enabled_routers
from rollwise.settings import OperatorSettings

OWNED = {LABEL_MODEL_DEPLOYMENT: kopf.PRESENT}
CHILDREN = (
    Resource("apps", "v1", "deployments", "Deployment"),
    Resource("", "v1", "services", "Service"),
    Resource("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
    # a rollout's backtest (#20); its pods are listed once the Job ends, never watched
    Resource("batch", "v1", "jobs", "Job"),
)
"""The kinds every ModelDeployment owns; routers add their own (`Router.owns`)."""

quiet_kopf_readiness_gate()


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    op: OperatorSettings = memo.settings
    tune(settings, op)
    daemon.start_io(memo, op)
    memo.routers = enabled_routers(op.routers)


# Every Kopf callback below is a coroutine although none awaits: Kopf runs plain functions in a
# thread pool, and with thousands of objects each index update and wake-up queued for a thread.


def _parent(namespace: str | None, labels: kopf.Labels) -> tuple[str | None, str]:
    return namespace, labels[LABEL_MODEL_DEPLOYMENT]


async def _owned(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> Any:
    """Our children by parent: one function, one index per kind (the index id names the kwarg),
    each child as the slim view the planner reads (`child_view`)."""
    return {_parent(namespace, labels): child_view(body)}


@kopf.index(GROUP, VERSION, PLURAL)
async def daemon_states(namespace: str | None, name: str | None, memo: kopf.Memo, **_: Any) -> Any:
    """Each ModelDeployment's daemon state, so a child's event can wake its parent."""
    return {(namespace, name): daemon.daemon_state(memo)}


def _wake(index: kopf.Index[Any, Any], key: tuple[str | None, str]) -> None:
    for state in index.get(key, []):
        state.wake.set()


async def _child_changed(
    namespace: str | None, labels: kopf.Labels, daemon_states: kopf.Index[Any, Any], **_: Any
) -> None:
    _wake(daemon_states, _parent(namespace, labels))


def watch_children(resource: Resource) -> None:
    """Index one kind of our children by parent, and wake the parent on each change: waiting for
    pods or a route is event-driven (the planner's timer while waiting is only a fallback), and
    reading back a Service or HPA we wrote moves a step on."""
    index = daemon.owned_index(resource.plural)
    kopf.index(resource.group, resource.version, resource.plural, labels=OWNED, id=index)(_owned)
    kopf.on.event(resource.group, resource.version, resource.plural, labels=OWNED, id=f"{index}_changed")(
        _child_changed  # type: ignore[arg-type]  # Kopf injects index kwargs its callback protocols do not list
    )


for _kind in CHILDREN:
    watch_children(_kind)


@kopf.on.event(GROUP, VERSION, PLURAL)  # type: ignore[arg-type]  # Kopf injects index kwargs its callback protocols do not list
async def model_deployment_changed(
    namespace: str | None,
    name: str | None,
    daemon_states: kopf.Index[Any, Any],
    batch_states: kopf.Index[Any, Any],
    **_: Any,
) -> None:
    _wake(daemon_states, (namespace, name or ""))
    # A batch job waiting for this ModelDeployment's model (Pending) looks again.
    for key in list(batch_states):
        if key[0] == namespace:
            for state in batch_states.get(key, []):
                if state.waiting_for == name:
                    state.wake.set()


# No on.create/update/delete handler on purpose: any of them makes Kopf keep a diff-base
# annotation on every ModelDeployment, one more write per creation and per spec change. The
# daemon below sees creation, changes and deletion (its stop reason) on its own.


async def _edited_by_name(namespace: str | None, name: str | None, body: kopf.Body, **_: Any) -> Any:
    return {(namespace, body.get("kind"), name): dict(body)}


async def _edited_changed(*, namespace: str | None, daemon_states: kopf.Index[Any, Any], **_: Any) -> None:
    # A route's status (accepted or not) decides whether a step took effect: wake its namespace.
    for key in list(daemon_states):
        if key[0] == namespace:
            _wake(daemon_states, key)


def register_routers(enabled: frozenset[str]) -> None:
    """Watch what the enabled routers declare (`Router.edits`, `Router.owns`), so clusters without
    those CRDs or RBAC watch nothing extra."""
    for router in enabled_routers(enabled):
        if (edits := router.edits) is not None:
            res, index = edits.resource, daemon.edited_index(router)
            kopf.index(res.group, res.version, res.plural, id=index)(_edited_by_name)
            kopf.on.event(res.group, res.version, res.plural, id=f"{index}_changed")(_edited_changed)  # type: ignore[arg-type]  # Kopf injects index kwargs its callback protocols do not list
        for owned in router.owns:
            watch_children(owned)


# One daemon per ModelDeployment: it reconciles, then sleeps until woken or due again.
kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10, id="model_deployment")(daemon.run)


# ModelBatchJob (#20): one daemon per running job (`kube/batch.run_batch`), which creates the
# Indexed Job once and reads it back each time the Job changes; it ends with the job. No
# on.create handler: it would cost Kopf's diff-base annotation, one more write per job.
def _batch_running(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") not in {str(p) for p in batch_plan.ENDED}


kopf.daemon(GROUP, VERSION, batch_api.PLURAL, when=_batch_running, cancellation_timeout=10, id="batch_job")(
    batch.run_batch
)


@kopf.index(GROUP, VERSION, batch_api.PLURAL)
async def batch_states(namespace: str | None, name: str | None, memo: kopf.Memo, **_: Any) -> Any:
    """Each ModelBatchJob's daemon state, so its Job's events (and its model's) can wake it."""
    return {(namespace, name): batch.batch_state(memo)}


@kopf.on.event("batch", "v1", "jobs", labels={batch_plan.LABEL_BATCH_JOB: kopf.PRESENT})  # type: ignore[arg-type]  # Kopf injects index kwargs its callback protocols do not list
async def batch_job_changed(
    namespace: str | None, labels: kopf.Labels, batch_states: kopf.Index[Any, Any], **_: Any
) -> None:
    _wake(batch_states, (namespace, labels[batch_plan.LABEL_BATCH_JOB]))


@kopf.on.event(GROUP, VERSION, batch_api.PLURAL)  # type: ignore[arg-type]  # Kopf injects index kwargs its callback protocols do not list
async def batch_job_edited(
    namespace: str | None, name: str | None, body: kopf.Body, batch_states: kopf.Index[Any, Any], **_: Any
) -> None:
    """A spec edit (a new generation the status has not seen) gets a pass; our own status writes
    do not wake the daemon."""
    if body.get("metadata", {}).get("generation") != (body.get("status") or {}).get("observedGeneration"):
        _wake(batch_states, (namespace, name or ""))
