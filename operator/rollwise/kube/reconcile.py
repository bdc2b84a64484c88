"""One reconcile pass: observe -> decide -> write (children, status, Events) -> call webhooks.

The only place where the planner's decision meets the API. Blocking client calls run in worker
threads so one slow write never stalls the event loop that serves every other ModelDeployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import orjson
from kubernetes import client
from pydantic import ValidationError
from rollwise_contract.base import describe_errors

from rollwise import telemetry
from rollwise.api.v1alpha1 import (
    BacktestPhase,
    ModelDeployment,
    ModelDeploymentStatus,
    PassedGate,
    Phase,
    Reason,
)
from rollwise.kube.apply import ObjectKey, apply_objects, delete_objects, desired_hash
from rollwise.kube.batch import fetch_pods
from rollwise.kube.events import post_events
from rollwise.kube.observe import observe
from rollwise.kube.ownership import foreign_children, unread
from rollwise.kube.slots import Slots
from rollwise.kube.status import patch_status
from rollwise.kube.webhooks import WebhookSender
from rollwise.plan import monitoring
from rollwise.plan.analysis import Measured, QueryRequest, due_queries
from rollwise.plan.decision import Decision, EventType, Note
from rollwise.plan.guardrails import violations
from rollwise.plan.machine import decide
from rollwise.plan.measurement import MetricProvider
from rollwise.plan.observed import Observed, WebhookKey, WebhookResult
from rollwise.plan.status import invalid_status
from rollwise.routers import router_for
from rollwise.settings import OperatorSettings

log = logging.getLogger("rollwise.reconcile")


@dataclass
class WebhookAnswers:
    """Webhook answers held for the planner, by call: an ok one until the gate moves on (the
    candidate changes), a failed one for exactly one pass, so that a retry calls again."""

    answers: dict[WebhookKey, WebhookResult] = field(default_factory=dict)
    revision: str | None = None

    def for_pass(
        self, candidate_revision: str | None, stored: Sequence[PassedGate] = ()
    ) -> tuple[WebhookResult, ...]:
        """The answers this pass sees; failed ones are then forgotten (the gate retries or fails).

        `stored` are the gates the status records as passed (`status.passedGates`): a restarted
        operator starts from them instead of asking those webhooks again."""
        if candidate_revision != self.revision:
            self.answers.clear()  # answers belong to the candidate they were asked about
            self.revision = candidate_revision
            for g in stored:
                if g.revision == candidate_revision:
                    key = WebhookKey(g.name, g.type, g.revision, g.step)
                    self.answers[key] = WebhookResult(key, ok=True, detail="answered 2xx (kept in status)")
        shown = tuple(self.answers.values())
        for failed in [k for k, r in self.answers.items() if not r.ok]:
            del self.answers[failed]
        return shown

    def has(self, key: WebhookKey) -> bool:
        return key in self.answers

    def keep(self, result: WebhookResult) -> None:
        self.answers[result.key] = result

    def seen(self) -> frozenset[tuple[WebhookKey, bool]]:
        return frozenset((k, r.ok) for k, r in self.answers.items())


@dataclass
class DaemonState:
    """What one ModelDeployment's daemon remembers between passes (in memory only: all state that
    must survive a restart is in the resource's status)."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    last_status: dict[str, Any] | None = None
    applied: dict[ObjectKey, str] = field(default_factory=dict)
    answers: WebhookAnswers = field(default_factory=WebhookAnswers)
    written_over: str | None = None
    """The resourceVersion our last status write was planned from. A body still at that version
    has not caught up with the write (the watch delivers it an event later): planning from it would
    redo the last transition at a later `now`, entering a step twice with a new start time."""

    settled: Inputs | None = None
    """What the last pass planned from, its status as it wrote it. Inputs equal to these mean only
    our own status write came back: the planner ran its transitions to a fixed point, so planning
    again from the status it wrote changes nothing, and the daemon skips that pass. Compared by
    content, not resourceVersion: someone's spec or annotation change that lands between our read
    and our status patch rides on the same version. Children count by resourceVersion, and those we
    wrote count as unseen: reading them back is what moves a step on."""

    def behind_own_write(self, body: Mapping[str, Any]) -> bool:
        return self.written_over is not None and body["metadata"].get("resourceVersion") == self.written_over


@dataclass(frozen=True)
class Inputs:
    """All a pass reads that an event can change (time is the requeue's)."""

    content: bytes
    """A digest of the metadata (but resourceVersion and managedFields, which change on every
    write) and the spec: holding the dicts kept every model's previous body alive (6 MB at 1 000)."""
    status: Mapping[str, Any]
    """The fields we write, as stored."""
    versions: frozenset[tuple[ObjectKey, str | None]]
    """Children and router objects by resourceVersion."""
    webhooks: frozenset[tuple[WebhookKey, bool]]


def pass_inputs(
    body: Mapping[str, Any],
    children: Sequence[Mapping[str, Any]],
    router_objects: Sequence[Mapping[str, Any]],
    memory: DaemonState,
) -> Inputs:
    stored = body.get("status") or {}
    meta = {k: v for k, v in body["metadata"].items() if k not in ("resourceVersion", "managedFields")}
    content = orjson.dumps([meta, body.get("spec")], option=orjson.OPT_SORT_KEYS)
    return Inputs(
        hashlib.blake2b(content, digest_size=16).digest(),
        {k: stored.get(k) for k in memory.last_status or stored},
        frozenset(
            (ObjectKey.of(o), (o.get("metadata") or {}).get("resourceVersion"))
            for o in [*children, *router_objects]
        ),
        memory.answers.seen(),
    )


def status_json(status: ModelDeploymentStatus) -> dict[str, Any]:
    """The status as stored: no nested nulls (a merge patch would delete those keys, so the stored
    object would never equal a fresh computation), but top-level nulls kept so that a field we no
    longer set is removed."""
    full = status.model_dump(mode="json", by_alias=True)
    sparse = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {key: sparse.get(key) for key in full}


class Behind:
    """`reconcile`'s answer for a body that predates our own last status write."""


BEHIND = Behind()


async def reconcile(
    api: client.ApiClient,
    body: Mapping[str, Any],
    children: Sequence[Mapping[str, Any]],
    *,
    settings: OperatorSettings,
    memory: DaemonState,
    now: dt.datetime,
    router_objects: Sequence[Mapping[str, Any]] = (),
    provider: MetricProvider | None = None,
    write_slots: asyncio.Semaphore | None = None,
    inputs: Inputs | None = None,
    webhooks: WebhookSender | None = None,
    query_slots: Slots | None = None,
) -> Decision | Behind | None:
    """One pass: observe -> decide -> write -> call webhooks. Returns the decision; `BEHIND` when
    `body` predates our own last status write (nothing was planned: the write's event is on its
    way); None when there was nothing to decide (the spec does not parse, or the object is going
    away)."""
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        # Going away: the garbage collector removes the children; nothing to write.
        return None
    if memory.behind_own_write(body):
        # Planning from the older status would redo its transition (a step entered twice).
        return BEHIND
    memory.settled = None  # until this pass has written all it planned
    # Taken before the first await (Kopf replaces the body under us when an event comes), unless
    # the daemon took them already to decide whether to pass at all.
    seen = inputs or pass_inputs(body, children, router_objects, memory)
    with telemetry.RECONCILE_SECONDS.time():
        try:
            # Parsed on every pass, not cached: a parsed ModelDeployment is about 22 KB, which at
            # 1 000 of them cost more memory (22 MB) than the parsing costs CPU.
            md = ModelDeployment.model_validate(dict(body))
        except ValidationError as err:
            await _write_invalid(api, write_slots, memory, body, problems=describe_errors(err), now=now)
            return None
        if refused := violations(
            md, settings.guardrails, serving_image=settings.serving_image, batch_image=settings.batch_image
        ):
            # The administrator's guardrails refuse it: nothing is created or changed, stable serves on.
            await _write_invalid(api, write_slots, memory, body, problems=refused, now=now)
            return None
        observed = await _observe(
            md, children, router_objects, memory=memory, provider=provider, now=now, slots=query_slots
        )
        observed = await _with_backtest_pods(api, md, observed, owner_uid=meta["uid"])
        decision = decide(
            md,
            observed,
            now=now,
            owner_uid=meta["uid"],
            serving_image=settings.serving_image,
            router=router_for(md.spec.rollout.traffic.provider),
            batch_image=settings.batch_image,
        )
        live = {ObjectKey.of(c): c for c in [*children, *router_objects]}
        routed = [ObjectKey.of(o) for o in router_objects]
        check = partial(
            foreign_children, api, decision.desired, live, owner_uid=meta["uid"], router_objects=routed
        )
        # Reads happen only for children not in the index (a new ModelDeployment): off the loop then,
        # and on it, with no API call, for every steady pass.
        foreign = await asyncio.to_thread(check) if unread(decision.desired, live, routed) else check()
        if foreign:
            # Another owner's object at a child's name: write nothing of ours, say which and why.
            await _write_invalid(api, write_slots, memory, body, problems=foreign, now=now)
            return None
        await _write(api, write_slots, memory, body, decision=decision, live=live)
        if memory.last_status is not None:
            # Webhook answers as the planner left them, before this pass's new ones come in.
            memory.settled = replace(seen, status=memory.last_status, webhooks=memory.answers.seen())
        await _call_webhooks(memory, decision, body, webhooks or WebhookSender())
        telemetry.RECONCILES.labels("ok").inc()
        if decision.status.phase is not None:
            watched = decision.status.monitoring
            telemetry.PHASES.set(
                meta["namespace"],
                meta["name"],
                decision.status.phase.value,
                decision.status.weight,
                watched.healthy if watched is not None else None,
            )
        return decision


async def _write_invalid(
    api: client.ApiClient,
    slots: asyncio.Semaphore | None,
    memory: DaemonState,
    body: Mapping[str, Any],
    *,
    problems: Sequence[str],
    now: dt.datetime,
) -> None:
    """A manifest that does not parse: only its status is written; children stay, stable serves on."""
    status = invalid_status(body, problems, now)
    note = Note(EventType.WARNING, Reason.INVALID_SPEC, status.message)
    await _send(api, slots, memory, body, Writes(status=status_json(status), notes=(note,)))
    telemetry.RECONCILES.labels("invalid").inc()
    meta = body["metadata"]
    telemetry.PHASES.set(meta["namespace"], meta["name"], Phase.INVALID.value, status.weight)


async def _observe(
    md: ModelDeployment,
    children: Sequence[Mapping[str, Any]],
    router_objects: Sequence[Mapping[str, Any]],
    *,
    memory: DaemonState,
    provider: MetricProvider | None,
    now: dt.datetime,
    slots: Slots | None = None,
) -> Observed:
    """The planner's snapshot: children by track, the router's objects, the measurements due now,
    and the webhook answers held for this candidate."""
    measurements: tuple[Measured, ...] = ()
    if provider is not None:
        due = [*due_queries(md, now), *monitoring.due_queries(md, now)]
        measurements = tuple(
            await asyncio.gather(*(_measure_held(slots, md, provider, request) for request in due))
        )
    observed = replace(
        observe(children, owner_uid=md.metadata.uid or ""),
        router_objects=tuple(dict(o) for o in router_objects),
        measurements=measurements,
        webhooks=memory.answers.for_pass(md.status.candidate_revision, md.status.passed_gates),
    )
    log.debug("%s observed stable=%s candidate=%s", md.metadata.name, observed.stable, observed.candidate)
    return observed


async def _with_backtest_pods(
    api: client.ApiClient, md: ModelDeployment, observed: Observed, *, owner_uid: str
) -> Observed:
    """The running backtest's pods, once its Job has ended: their termination messages carry the
    shards' tallies. One LIST by the Job's label, only until the verdict is in the status (pods are
    never watched: a cluster's pods are far too many to index for this)."""
    bt = md.status.backtest
    if bt is None or bt.phase is not BacktestPhase.RUNNING:
        return observed
    job = next((j for j in observed.backtest_jobs if j.name == bt.job_name and j.owned), None)
    if job is None or not (job.complete or job.failed):
        return observed
    pods = await asyncio.to_thread(fetch_pods, api, md.metadata.namespace or "", job.name)
    return replace(observed, backtest_pods=tuple(pods))


async def _write(
    api: client.ApiClient,
    slots: asyncio.Semaphore | None,
    memory: DaemonState,
    body: Mapping[str, Any],
    *,
    decision: Decision,
    live: Mapping[ObjectKey, Mapping[str, Any]],
) -> None:
    """Apply what differs, delete what goes, write the status and its Events; `live` is the
    children and router objects by key."""
    namespace = body["metadata"]["namespace"]
    # Skip what we applied already when the index still shows the older copy (it lags our own
    # write by an event); apply_objects skips what the live object already matches.
    hashes = {ObjectKey.of(m): desired_hash(m) for m in decision.desired}
    stale = [
        m
        for m in decision.desired
        if not (ObjectKey.of(m) in live and memory.applied.get(ObjectKey.of(m)) == hashes[ObjectKey.of(m)])
    ]
    gone = [ObjectKey(c.api_version, c.kind, namespace, c.name) for c in decision.delete]
    writes = Writes(
        apply=stale,
        live=live,
        delete=[k for k in gone if k in live],
        status=status_json(decision.status),
        notes=decision.notes,
    )
    await _send(api, slots, memory, body, writes)
    memory.applied.update(hashes)


async def _call_webhooks(
    memory: DaemonState, decision: Decision, body: Mapping[str, Any], sender: WebhookSender
) -> None:
    """The calls the decision asks for that have no answer yet; the next pass acts on the answers."""
    pending = [c for c in decision.webhook_calls if not memory.answers.has(c.key)]
    for result in await asyncio.gather(*(sender.call(c, body) for c in pending)):
        memory.answers.keep(result)
        memory.wake.set()


async def _measure_held(
    slots: Slots | None, md: ModelDeployment, provider: MetricProvider, request: QueryRequest
) -> Measured:
    """One query in a worker thread, once its namespace has a query slot."""
    async with slots.held(md.metadata.namespace or "") if slots else contextlib.nullcontext():
        return await asyncio.to_thread(_measure, provider, request)


def _measure(provider: MetricProvider, request: QueryRequest) -> Measured:
    return Measured(request, provider.query(request.promql, request.at, request.by))


@dataclass(frozen=True)
class Writes:
    """Everything one pass writes: children to apply or delete, the status, the notes as Events."""

    apply: Sequence[Mapping[str, Any]] = ()
    live: Mapping[ObjectKey, Mapping[str, Any]] = field(default_factory=dict)
    delete: Sequence[ObjectKey] = ()
    status: dict[str, Any] | None = None
    notes: tuple[Note, ...] = ()


@dataclass(frozen=True)
class Sent:
    applied: list[ObjectKey]
    deleted: list[ObjectKey]
    status_version: str | None
    """The resourceVersion after our status patch (None: no patch was sent)."""


async def _send(
    api: client.ApiClient,
    slots: asyncio.Semaphore | None,
    memory: DaemonState,
    body: Mapping[str, Any],
    writes: Writes,
) -> None:
    """Send a pass's writes from one worker thread while holding a write slot.

    Why one slot per pass, not per request: with 1 000 ModelDeployments applied at once, requests
    queued one by one interleave every object's pass with all the others', so each object's next
    write waits behind the whole wave (its children came 30-50 s late, its Ready status a minute
    late). A slot per pass lets the earliest objects finish first, like a controller's work
    queue; waiters are served in arrival order. The status (and its Events) is only sent when it
    differs from both the live one and the one we last wrote (the live body may lag our own write).
    """
    status = writes.status
    if status is not None:
        current = body.get("status") or {}
        # Only fields we set count: others' (e.g. Kopf's) are never ours to compare.
        changed = sorted(k for k, v in status.items() if current.get(k) != v)
        if memory.last_status == status or not changed:
            memory.last_status, status = status, None
        else:
            meta = body["metadata"]
            log.info(
                "%s/%s status: %s",
                meta["namespace"],
                meta["name"],
                ", ".join(f"{k}={status[k]!r}" if k in ("phase", "message") else k for k in changed),
            )
    if not (writes.apply or writes.delete or status is not None):
        return
    todo = replace(writes, status=status, notes=writes.notes if status is not None else ())
    # A status alone is one cheap patch that tells users (and GitOps tools) where things stand:
    # it never waits behind other objects' children.
    heavy = slots is not None and bool(todo.apply or todo.delete)
    async with slots if heavy and slots is not None else contextlib.nullcontext():
        sent = await asyncio.to_thread(_write_pass, api, body, todo)
    for key in sent.applied:
        telemetry.API_WRITES.labels(key.kind, "apply").inc()
    for key in sent.deleted:
        telemetry.API_WRITES.labels(key.kind, "delete").inc()
        memory.applied.pop(key, None)
    if status is not None:
        based_on = body["metadata"].get("resourceVersion")
        telemetry.API_WRITES.labels("ModelDeployment", "status").inc()
        memory.last_status = status
        memory.written_over = based_on if sent.status_version != based_on else None
        if todo.notes:
            telemetry.API_WRITES.labels("Event", "create").inc()


def _write_pass(api: client.ApiClient, body: Mapping[str, Any], writes: Writes) -> Sent:
    """Children first (the stable keeps serving whatever the status says), then the status, then
    the Events that explain it."""
    meta = body["metadata"]
    applied = apply_objects(api, writes.apply, writes.live)
    deleted = delete_objects(api, writes.delete)
    version = None
    if writes.status is not None:
        version = patch_status(api, meta["namespace"], meta["name"], writes.status)
        if writes.notes:
            post_events(api, body, writes.notes)
    return Sent(applied, deleted, version)
