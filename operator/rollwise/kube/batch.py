"""A ModelBatchJob's pass against the API server: read the Job, its pods and the referenced
ModelDeployment, create the Job once, patch the status, post Events.

Every call is bounded: one GET of the Job, one LIST of its pods (by the Job's own label, at most
`POD_LIST_LIMIT`), at most one GET of a ModelDeployment and one create before the Job exists, and
a status patch only when the status changed. The decisions (which model, what Job, what status,
which Events) are `plan/batch.py`'s; this module only translates bodies and sends requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError
from rollwise_contract.base import describe_errors

from rollwise.api.batch import PLURAL, BatchPhase, ModelBatchJob, ModelBatchJobStatus
from rollwise.api.v1alpha1 import GROUP, VERSION, ModelDeployment
from rollwise.api.v1alpha1 import PLURAL as MD_PLURAL
from rollwise.kube.events import post_events
from rollwise.kube.ownership import controlled_by
from rollwise.plan.batch import (
    CONTAINER,
    ENDED,
    Unresolved,
    batch_notes,
    batch_status,
    desired_job,
    invalid_batch_status,
    job_name,
    pinned,
    resolve_model,
)
from rollwise.plan.guardrails import batch_violations
from rollwise.plan.jobs import ObservedJob, ObservedPod, PodPhase, parse_indexes
from rollwise.settings import OperatorSettings

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
FAILURE_COUNT_ANNOTATIONS = (
    "batch.kubernetes.io/job-index-failure-count",
    "batch.kubernetes.io/job-index-ignored-failure-count",
)
"""What the Job controller writes on each pod it makes with backoffLimitPerIndex: the index's
earlier failed pods, counted against the limit and ignored by podFailurePolicy (disruptions)."""
POD_LIST_LIMIT = 5000
"""Pods read per pass: 1000 shards with a few retries each; past it the oldest are not seen."""


def _time(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def observed_job(body: Mapping[str, Any], owner_uid: str) -> ObservedJob:
    status = body.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    failed = conditions.get("Failed")
    return ObservedJob(
        name=body["metadata"]["name"],
        owned=controlled_by(body, owner_uid),
        completed_indexes=parse_indexes(status.get("completedIndexes")),
        failed_indexes=parse_indexes(status.get("failedIndexes")),
        complete="Complete" in conditions,
        failed=failed is not None,
        failure_message=str((failed or {}).get("message") or ""),
        start_time=_time(status.get("startTime")),
        completion_time=_time(status.get("completionTime")),
    )


def observed_pod(body: Mapping[str, Any]) -> ObservedPod | None:
    """The pod as the plan reads it; None for a pod without a completion index."""
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    index = annotations.get(INDEX_ANNOTATION)
    if index is None or not str(index).isdigit():
        return None
    status = body.get("status") or {}
    code: int | None = None
    message = ""
    for container in status.get("containerStatuses") or []:
        if container.get("name") != CONTAINER:
            continue
        terminated = (container.get("state") or {}).get("terminated") or (
            container.get("lastState") or {}
        ).get("terminated")
        if terminated:
            code = terminated.get("exitCode")
            message = terminated.get("message") or ""
    phase = status.get("phase") or "Pending"
    return ObservedPod(
        name=meta.get("name", ""),
        index=int(index),
        phase=PodPhase(phase) if phase in PodPhase.__members__.values() else PodPhase.UNKNOWN,
        created=_time(meta.get("creationTimestamp")) or dt.datetime.min.replace(tzinfo=dt.UTC),
        exit_code=code,
        message=message,
        job=str((meta.get("labels") or {}).get(JOB_NAME_LABEL, "")),
        earlier_failures=sum(
            int(v) for a in FAILURE_COUNT_ANNOTATIONS if str(v := annotations.get(a, "0")).isdigit()
        ),
    )


def _job_body(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        job = client.BatchV1Api(api).read_namespaced_job(name, namespace)
    except ApiException as err:
        if err.status == 404:
            return None
        raise
    return cast(dict[str, Any], api.sanitize_for_serialization(job))  # type: ignore[no-untyped-call]  # untyped upstream


def fetch_pods(api: client.ApiClient, namespace: str, name: str) -> list[ObservedPod]:
    pods = client.CoreV1Api(api).list_namespaced_pod(
        namespace, label_selector=f"{JOB_NAME_LABEL}={name}", limit=POD_LIST_LIMIT
    )
    page = cast(dict[str, Any], api.sanitize_for_serialization(pods))  # type: ignore[no-untyped-call]  # untyped upstream
    bodies: list[dict[str, Any]] = page.get("items") or []
    return [p for b in bodies if (p := observed_pod(b)) is not None]


def fetch_deployment(api: client.ApiClient, namespace: str, name: str) -> ModelDeployment | None:
    try:
        body = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, MD_PLURAL, name
        )
    except ApiException as err:
        if err.status == 404:
            return None
        raise
    try:
        return ModelDeployment.model_validate(body)
    except ValidationError:
        return None  # an Invalid ModelDeployment pins nothing


def create_job(api: client.ApiClient, namespace: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
    created = client.BatchV1Api(api).create_namespaced_job(namespace, dict(manifest))  # type: ignore[arg-type]  # a dict body is sent as is
    return cast(dict[str, Any], api.sanitize_for_serialization(created))  # type: ignore[no-untyped-call]  # untyped upstream


def status_json(status: ModelBatchJobStatus) -> dict[str, Any]:
    """As `reconcile.status_json`: nested nulls dropped, top-level ones kept to remove a field."""
    full = status.model_dump(mode="json", by_alias=True)
    sparse = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {key: sparse.get(key) for key in full}


def patch_batch_status(api: client.ApiClient, namespace: str, name: str, status: Mapping[str, Any]) -> None:
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": dict(status)}
    )


def _previous(body: Mapping[str, Any]) -> ModelBatchJobStatus:
    try:
        return ModelBatchJobStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return ModelBatchJobStatus()


def reconcile_batch(
    api: client.ApiClient,
    body: Mapping[str, Any],
    *,
    settings: OperatorSettings,
    now: dt.datetime,
    written: Mapping[str, Any] | None = None,
) -> ModelBatchJobStatus:
    """One pass, synchronous (the daemon runs it in a thread); returns the status it wrote or kept.

    `written` is the status this operator last wrote: a pass woken by a Job event can come before
    that write's own event has refreshed `body`, and planning from the older status would patch
    and announce the same change twice."""
    meta = body["metadata"]
    namespace, uid = meta["namespace"], meta["uid"]
    if written is not None:
        body = {**body, "status": {**(body.get("status") or {}), **written}}
    previous = _previous(body)
    try:
        mbj = ModelBatchJob.model_validate(dict(body))
    except ValidationError as err:
        new = invalid_batch_status(previous, describe_errors(err), generation=meta.get("generation"), now=now)
        return _write(api, body, previous, new)
    job_body = _job_body(api, namespace, job_name(mbj))
    if job_body is None:
        if refused := batch_violations(
            mbj, settings.guardrails, serving_image=settings.serving_image, batch_image=settings.batch_image
        ):
            new = invalid_batch_status(previous, refused, generation=mbj.metadata.generation, now=now)
            return _write(api, body, previous, new)
        ref = mbj.spec.model.from_deployment
        deployment = fetch_deployment(api, namespace, ref.name) if ref is not None else None
        model = resolve_model(mbj, deployment)
        if isinstance(model, Unresolved):
            new = batch_status(mbj, job=None, pods=[], model=None, now=now, problem=model)
            return _write(api, body, previous, new)
        manifest = desired_job(mbj, model, owner_uid=uid, batch_image=settings.batch_image)
        try:
            job_body = create_job(api, namespace, manifest)
        except ApiException as err:
            if err.status != 409:
                raise
            job_body = _job_body(api, namespace, job_name(mbj))  # created meanwhile, or a foreign one
            if job_body is None:
                raise
        mbj = mbj.model_copy(update={"status": previous.model_copy(update={"model": pinned(model, mbj)})})
    job = observed_job(job_body, uid)
    pods = fetch_pods(api, namespace, job.name) if job.owned else []
    new = batch_status(mbj, job=job, pods=pods, model=None, now=now)
    return _write(api, body, previous, new)


RETRY_SECONDS = 5.0
"""After a failed request, the next pass."""


@dataclass
class BatchDaemonState:
    """One ModelBatchJob's daemon between passes, shared with the handlers that wake it."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    waiting_for: str | None = None
    """The ModelDeployment a Pending job waits for (its stable or candidate model): its events
    wake this job too."""
    written: dict[str, Any] | None = None
    """The status the last pass wrote or found (see `reconcile_batch`)."""


def batch_state(memo: kopf.Memo) -> BatchDaemonState:
    """This ModelBatchJob's state (Kopf gives each object its own memo copy)."""
    if "batch_state" not in memo:
        memo.batch_state = BatchDaemonState()
    state: BatchDaemonState = memo.batch_state
    return state


async def run_batch(
    *, body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, logger: kopf.Logger, **_: Any
) -> None:
    """Passes until the job ends: each when its Job changes (a shard started, finished, failed),
    when the ModelDeployment it waits for changes, or after `batch_resync_seconds` in case an
    event was missed. A finished job gets no more passes, and costs no request at all."""
    state = batch_state(memo)
    settings: OperatorSettings = memo.settings
    while not stopped:
        state.wake.clear()
        try:
            status = await asyncio.to_thread(
                reconcile_batch,
                memo.api,
                body,
                settings=settings,
                now=dt.datetime.now(dt.UTC),
                written=state.written,
            )
        except ApiException as err:
            logger.warning(f"batch pass failed, retrying in {RETRY_SECONDS:.0f}s: {err.status} {err.reason}")
            wait = RETRY_SECONDS
        else:
            state.written = status_json(status)
            if status.phase in ENDED:
                return
            state.waiting_for = _waited_for(body) if status.phase == BatchPhase.PENDING else None
            wait = settings.batch_resync_seconds
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.wake.wait(), timeout=wait)


def _waited_for(body: Mapping[str, Any]) -> str | None:
    ref = ((body.get("spec") or {}).get("model") or {}).get("fromDeployment") or {}
    name = ref.get("name") if isinstance(ref, Mapping) else None
    return name if isinstance(name, str) else None


def _write(
    api: client.ApiClient, body: Mapping[str, Any], previous: ModelBatchJobStatus, new: ModelBatchJobStatus
) -> ModelBatchJobStatus:
    wanted = status_json(new)
    if wanted != {k: (body.get("status") or {}).get(k) for k in wanted}:
        meta = body["metadata"]
        patch_batch_status(api, meta["namespace"], meta["name"], wanted)
        notes = batch_notes(previous, new)
        if notes:
            post_events(api, body, notes)
    return new
