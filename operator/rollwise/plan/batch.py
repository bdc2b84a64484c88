"""A ModelBatchJob's plan: the model it pins, the Indexed Job it needs, and its status.

Pure, like the rest of `plan/`: the spec, the resolved model, the observed Job and pods and `now`
in; a Job manifest, a status and Event notes out. The status is rebuilt from the world on every
pass (the Job's completed and failed indexes, each pod's termination message), so an operator
restarted mid-run reports the same thing; only rows of shards whose pods are gone are carried over
from the previous status.

The Job's `podFailurePolicy` reads `rollwise-batch`'s exit codes from the shared contract
(`rollwise_contract.batch.ExitCode`): bad settings and permanent data or model problems fail the
shard's index at once (`FailIndex`), anything else is retried up to `backoffLimitPerIndex`, and
disruptions (preemption, node drain) are retried without counting against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from rollwise_contract.batch import PERMANENT_EXIT_CODES, ShardReport, ShardState
from rollwise_contract.model import Track

from rollwise.api.batch import (
    KIND,
    BatchPhase,
    ModelBatchJob,
    ModelBatchJobStatus,
    ResolvedModel,
    ShardPhase,
    ShardStatus,
)
from rollwise.api.v1alpha1 import (
    API_VERSION,
    ConditionType,
    ModelDeployment,
    ModelSpec,
    Reason,
    Resources,
    RuntimeSpec,
)
from rollwise.plan.conditions import kstatus_conditions
from rollwise.plan.decision import EventType, Note
from rollwise.plan.desired import (
    PVC_ROOT,
    container_path,
    container_resources,
    container_security_context,
    container_uri,
    feature_schema_arg,
    pod_security_context,
    scratch_size,
)
from rollwise.plan.jobs import ObservedJob, ObservedPod, PodPhase, shard_report
from rollwise.plan.manifest import JsonValue, Manifest
from rollwise.plan.names import LABEL_MANAGED_BY, LABEL_NAME, MANAGED_BY

BATCH_COMMAND = "rollwise-batch"
CONTAINER = "shard"
"""The one container of a shard's pod; the pod failure policy's rules name it."""
LABEL_BATCH_JOB = "rollwise.dev/model-batch-job"
TERMINATION_LOG = "/dev/termination-log"
MESSAGE_LIMIT = 1024
"""`status.shards[].message`'s maxLength."""


# ---- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unresolved:
    """Why the model cannot be pinned now; `waiting` when it may resolve by itself (a
    ModelDeployment not yet Healthy), otherwise the spec must change."""

    message: str
    waiting: bool


def resolve_model(mbj: ModelBatchJob, deployment: ModelDeployment | None) -> ModelSpec | Unresolved:
    """The model spec the shards load: the inline one, or what the named ModelDeployment's track
    runs now (stable: `status.stable`; candidate: `spec.model` while a rollout is in progress)."""
    source = mbj.spec.model
    if source.inline is not None:
        return source.inline
    ref = source.from_deployment
    if ref is None:  # the API's rule makes one of the two present
        return Unresolved("spec.model: set exactly one of fromDeployment and inline", waiting=False)
    where = f"spec.model.fromDeployment: ModelDeployment {ref.name}"
    if deployment is None:
        return Unresolved(
            f"{where} is not in namespace {mbj.metadata.namespace}; create it or fix the name", True
        )
    if ref.track == Track.STABLE:
        if deployment.status.stable is None:
            return Unresolved(f"{where} has no stable model yet; the job starts once it is Healthy", True)
        model = deployment.status.stable.model
    else:
        if deployment.status.candidate_version is None:
            return Unresolved(f"{where} has no candidate being rolled out; use track: stable", True)
        model = deployment.spec.model
    missing = missing_pins(model)
    if missing:
        return Unresolved(
            f"{where} ({ref.track}) has no {', '.join(missing)}; a batch job needs a pinned artifact "
            "with a feature schema (a model served by runtime.server cannot be batch-scored)",
            waiting=False,
        )
    return model


def pinned(model: ModelSpec, mbj: ModelBatchJob) -> ResolvedModel:
    """The status record of the model a Job was created with."""
    uri, model_format = model.artifact
    ref = mbj.spec.model.from_deployment
    return ResolvedModel(
        name=model.name,
        version=model.version,
        uri=uri,
        sha256=model.sha256 or "",
        format=model_format,
        source="inline" if ref is None else f"ModelDeployment {ref.name} ({ref.track})",
    )


# ---- the Job ------------------------------------------------------------------------------------


def job_name(mbj: ModelBatchJob) -> str:
    """The Job is named as the batch job: `kubectl get job <name>` finds it."""
    return mbj.metadata.name


def batch_labels(mbj: ModelBatchJob) -> dict[str, JsonValue]:
    return {LABEL_NAME: "rollwise-batch", LABEL_MANAGED_BY: MANAGED_BY, LABEL_BATCH_JOB: mbj.metadata.name}


def pod_failure_policy() -> Manifest:
    """Exit 2 and 3 fail the index at once (a retry fails the same way: bad settings, a digest
    mismatch, a corrupt file); any other non-zero exit counts against `backoffLimitPerIndex`; a
    disruption (preemption, eviction, node drain) is retried without counting."""
    return {
        "rules": [
            {
                "action": "FailIndex",
                "onExitCodes": {
                    "containerName": CONTAINER,
                    "operator": "In",
                    "values": [int(code) for code in PERMANENT_EXIT_CODES],
                },
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]
    }


def claim_of(uri: str) -> str | None:
    return uri.removeprefix("pvc://").split("/", 1)[0] if uri.startswith("pvc://") else None


def batch_args(mbj: ModelBatchJob, model: ModelSpec) -> list[JsonValue]:
    """Arguments of `rollwise-batch` (its parser is `rollwise_serving.batch.parse_batch_settings`);
    the shard index comes from the Job's `JOB_COMPLETION_INDEX`."""
    spec = mbj.spec
    uri, model_format = model.artifact
    args: list[JsonValue] = ["--model-uri", container_uri(uri), "--format", str(model_format)]
    if model.sha256 is not None:
        args += ["--sha256", model.sha256]
    if model.feature_schema is not None:
        args += ["--feature-schema", feature_schema_arg(model.feature_schema)]
    data = spec.input.uri
    args += ["--input", container_path(data) if claim_of(data) or data.startswith("file://") else data]
    if spec.input.format is not None:
        args += ["--input-format", str(spec.input.format)]
    args += ["--output", container_path(spec.output.uri), "--output-format", str(spec.output.format)]
    if spec.keep_columns:
        args += ["--keep", ",".join(spec.keep_columns)]
    args += ["--shard-count", str(spec.shards), "--termination-log", TERMINATION_LOG]
    return args


def _volumes(mbj: ModelBatchJob, model: ModelSpec) -> tuple[list[JsonValue], list[JsonValue]]:
    return shard_volumes(
        mbj.spec.resources, [model.uri or "", mbj.spec.input.uri], output=claim_of(mbj.spec.output.uri)
    )


def shard_volumes(
    resources: Resources | None, uris: Sequence[str], *, output: str | None = None
) -> tuple[list[JsonValue], list[JsonValue]]:
    """Volumes and mounts: `/tmp` (sized as a serving pod's), each claim the `uris` name at
    `PVC_ROOT/<claim>` as `container_uri` expects it, read-only except the `output` claim."""
    scratch = scratch_size(RuntimeSpec(resources=resources))
    volumes: list[JsonValue] = [{"name": "tmp", "emptyDir": {"sizeLimit": scratch}}]
    mounts: list[JsonValue] = [{"name": "tmp", "mountPath": "/tmp"}]
    claims = {c for c in map(claim_of, uris) if c is not None}
    for claim in sorted(claims | ({output} if output else set())):
        writable = claim == output
        volumes.append(
            {"name": f"pvc-{claim}", "persistentVolumeClaim": {"claimName": claim, "readOnly": not writable}}
        )
        mounts.append({"name": f"pvc-{claim}", "mountPath": f"{PVC_ROOT}/{claim}", "readOnly": not writable})
    return volumes, mounts


def desired_job(mbj: ModelBatchJob, model: ModelSpec, *, owner_uid: str, batch_image: str) -> Manifest:
    """The `batch/v1` Indexed Job scoring `mbj`'s shards with `model`, owned by `mbj`.

    Created once: a Job's pod template is immutable, which is what pins the model for the run.
    Without `spec.image` it runs `batch_image`: the serving image lacks pyarrow, which
    `rollwise-batch` needs."""
    spec = mbj.spec
    volumes, mounts = _volumes(mbj, model)
    owner: Manifest = {"apiVersion": API_VERSION, "kind": KIND, "name": mbj.metadata.name, "uid": owner_uid}
    return indexed_job(
        ShardJob(
            name=job_name(mbj),
            namespace=mbj.metadata.namespace,
            labels=batch_labels(mbj),
            owner=owner,
            image=spec.image or batch_image,
            args=batch_args(mbj, model),
            env=[e.model_dump(mode="json", exclude_none=True) for e in spec.env],
            resources=spec.resources,
            volumes=volumes,
            mounts=mounts,
            shards=spec.shards,
            parallelism=spec.parallelism or spec.shards,
            backoff_limit_per_index=spec.backoff_limit_per_index,
            node_selector=dict(spec.node_selector),
            tolerations=[t.model_dump(mode="json", exclude_none=True) for t in spec.tolerations],
        )
    )


@dataclass(frozen=True)
class ShardJob:
    """What differs between the Indexed Jobs that run `rollwise-batch`: a ModelBatchJob's and a
    rollout's backtest (`plan/backtest.py`); `indexed_job` builds both the same locked-down way."""

    name: str
    namespace: str | None
    labels: Manifest
    """On the Job (and on its pods, unless `pod_labels` says otherwise)."""
    owner: Manifest
    """The controller owner reference (apiVersion, kind, name, uid)."""
    image: str
    args: list[JsonValue]
    volumes: list[JsonValue]
    mounts: list[JsonValue]
    shards: int
    parallelism: int
    backoff_limit_per_index: int
    env: list[JsonValue] = field(default_factory=list)
    resources: Resources | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[JsonValue] = field(default_factory=list)
    pod_labels: Manifest | None = None


def indexed_job(job: ShardJob) -> Manifest:
    """The `batch/v1` Indexed Job of `rollwise-batch` shards: one index per shard, the exit-code
    `podFailurePolicy`, and the pod locked down as the serving pods are (restricted Pod Security
    profile, read-only root, no service-account token), writing only to its mounts' writable ones."""
    container: Manifest = {
        "name": CONTAINER,
        "image": job.image,
        "command": [BATCH_COMMAND],
        "args": job.args,
        "env": job.env,
        # The shard's summary JSON: the operator reads rows and errors from it, per index.
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "securityContext": container_security_context(),
        "volumeMounts": job.mounts,
    }
    resources = container_resources(RuntimeSpec(resources=job.resources))
    if resources:
        container["resources"] = resources
    pod: Manifest = {
        # a failed pod stays for its termination message; the Job makes a new one per retry
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # a shard never calls the API server
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": job.volumes,
    }
    if job.node_selector:
        pod["nodeSelector"] = dict(sorted(job.node_selector.items()))
    if job.tolerations:
        pod["tolerations"] = job.tolerations
    meta: Manifest = {"name": job.name, "labels": job.labels}
    if job.namespace:
        meta["namespace"] = job.namespace
    meta["ownerReferences"] = [{**job.owner, "controller": True, "blockOwnerDeletion": True}]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "completionMode": "Indexed",
            "completions": job.shards,
            "parallelism": job.parallelism,
            "backoffLimitPerIndex": job.backoff_limit_per_index,
            # without maxFailedIndexes every other shard still runs when one fails for good
            "maxFailedIndexes": job.shards,
            "podFailurePolicy": pod_failure_policy(),
            "template": {"metadata": {"labels": job.pod_labels or job.labels}, "spec": pod},
        },
    }


# ---- what is observed ---------------------------------------------------------------------------


# ---- status -------------------------------------------------------------------------------------


def _cut(text: str) -> str:
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def _why(pod: ObservedPod) -> str:
    report = shard_report(pod.message)
    if report is not None and report.error:
        return report.error
    if pod.exit_code is not None:
        return f"exit code {pod.exit_code}" + (
            " (a permanent problem)" if pod.exit_code in PERMANENT_EXIT_CODES else ""
        )
    return "the pod failed without a report (evicted, or killed before it wrote one)"


GONE = "a failed pod that is gone (deleted before its failure was read)"


def _succeeded_message(report: ShardReport, failed: Sequence[ObservedPod], failures: int) -> str:
    if report.status == ShardState.SKIPPED:
        return "skipped: finished by an earlier run"
    if failures:
        return _cut(f"attempt {failures + 1} scored after: {_why(failed[-1]) if failed else GONE}")
    return ""


def shard_status(
    index: int, pods: Sequence[ObservedPod], job: ObservedJob, previous: ShardStatus | None
) -> ShardStatus:
    """One shard from its pods (oldest first) and the Job's index sets."""
    mine = sorted((p for p in pods if p.index == index), key=lambda p: (p.created, p.name))
    failed = [p for p in mine if p.phase == PodPhase.FAILED]
    failures = max([len(failed), *(p.earlier_failures + (p.phase == PodPhase.FAILED) for p in mine)])
    live = [p for p in mine if p.phase in (PodPhase.PENDING, PodPhase.RUNNING, PodPhase.UNKNOWN)]
    if index in job.completed_indexes:
        done = [p for p in mine if p.phase == PodPhase.SUCCEEDED]
        report = shard_report(done[-1].message) if done else None
        if report is None or report.status not in (ShardState.SUCCEEDED, ShardState.SKIPPED):
            if previous is not None and previous.phase == ShardPhase.SUCCEEDED:
                return previous.model_copy(update={"failures": max(previous.failures, failures)})
            return ShardStatus(index=index, phase=ShardPhase.SUCCEEDED, failures=failures)
        return ShardStatus(
            index=index,
            phase=ShardPhase.SUCCEEDED,
            failures=failures,
            rows_in=report.rows_in,
            rows_out=report.rows_out,
            rows_rejected=report.rows_rejected,
            rows_per_second=round(report.rows_in / report.seconds, 1) if report.seconds > 0 else 0.0,
            message=_succeeded_message(report, failed, failures),
        )
    if index in job.failed_indexes:
        why = _why(failed[-1]) if failed else "failed"
        return ShardStatus(index=index, phase=ShardPhase.FAILED, failures=failures, message=_cut(why))
    if failures:
        phase = ShardPhase.RUNNING if live else ShardPhase.RETRYING
        why = f"attempt {failures + 1} after: " + (_why(failed[-1]) if failed else GONE)
        return ShardStatus(index=index, phase=phase, failures=failures, message=_cut(why))
    phase = ShardPhase.RUNNING if any(p.phase == PodPhase.RUNNING for p in live) else ShardPhase.PENDING
    return ShardStatus(index=index, phase=phase)


def _summary(shards: Sequence[ShardStatus]) -> str:
    counts = {phase: sum(s.phase == phase for s in shards) for phase in ShardPhase}
    parts = [f"{counts[ShardPhase.SUCCEEDED]}/{len(shards)} shards scored"]
    for phase in (ShardPhase.RUNNING, ShardPhase.RETRYING, ShardPhase.PENDING, ShardPhase.FAILED):
        if counts[phase]:
            parts.append(f"{counts[phase]} {phase.lower()}")
    return ", ".join(parts)


def _failed_message(shards: Sequence[ShardStatus], job: ObservedJob) -> str:
    failed = [s for s in shards if s.phase == ShardPhase.FAILED]
    if not failed:
        return job.failure_message or "the Job failed"
    head = "; ".join(f"shard {s.index}: {s.message}" for s in failed[:5])
    more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
    return f"{len(failed)} of {len(shards)} shards failed: {head}{more}"


def batch_status(
    mbj: ModelBatchJob,
    *,
    job: ObservedJob | None,
    pods: Sequence[ObservedPod],
    model: ResolvedModel | None,
    now: datetime,
    problem: Unresolved | None = None,
) -> ModelBatchJobStatus:
    """The whole next status, from the Job and its pods (or from why there is no Job)."""
    prev = mbj.status
    generation = mbj.metadata.generation
    base = ModelBatchJobStatus(
        observed_generation=generation,
        model=model or prev.model,
        shards_total=mbj.spec.shards,
        conditions=list(prev.conditions),
    )
    if job is None:
        if problem is not None:
            phase = BatchPhase.PENDING if problem.waiting else BatchPhase.INVALID
            state = ConditionType.RECONCILING if problem.waiting else ConditionType.STALLED
            reason = Reason.MODEL_NOT_RESOLVED if problem.waiting else Reason.INVALID_SPEC
            message = problem.message
        else:
            phase, state, reason, message = (
                BatchPhase.PENDING,
                ConditionType.RECONCILING,
                Reason.SCORING,
                "creating the Job",
            )
        conditions = kstatus_conditions(
            prev.conditions, state=state, reason=reason, message=message, generation=generation, now=now
        )
        return base.model_copy(update={"phase": phase, "message": message, "conditions": conditions})
    if not job.owned:
        message = f"Job {job.name} exists and is not owned by this ModelBatchJob; rename one of them"
        conditions = kstatus_conditions(
            prev.conditions,
            state=ConditionType.STALLED,
            reason=Reason.JOB_CONFLICT,
            message=message,
            generation=generation,
            now=now,
        )
        return base.model_copy(
            update={"phase": BatchPhase.INVALID, "message": message, "conditions": conditions}
        )
    before = {s.index: s for s in prev.shards}
    shards = [shard_status(i, pods, job, before.get(i)) for i in range(mbj.spec.shards)]
    finished = [s for s in shards if s.phase == ShardPhase.SUCCEEDED]
    rows_in = sum(s.rows_in for s in finished)
    end = job.completion_time or now
    elapsed = (end - job.start_time).total_seconds() if job.start_time is not None else 0.0
    if job.complete:
        phase, state, reason = BatchPhase.SUCCEEDED, ConditionType.READY, Reason.SUCCEEDED
    elif job.failed:
        phase, state, reason = BatchPhase.FAILED, ConditionType.STALLED, Reason.SHARDS_FAILED
    else:
        phase, state, reason = BatchPhase.RUNNING, ConditionType.RECONCILING, Reason.SCORING
    message = _failed_message(shards, job) if phase == BatchPhase.FAILED else _summary(shards)
    conditions = kstatus_conditions(
        prev.conditions, state=state, reason=reason, message=message, generation=generation, now=now
    )
    return base.model_copy(
        update={
            "phase": phase,
            "message": message,
            "job_name": job.name,
            "shards_succeeded": len(finished),
            "shards_failed": sum(s.phase == ShardPhase.FAILED for s in shards),
            "rows_in": rows_in,
            "rows_done": sum(s.rows_out for s in finished),
            "rows_failed": sum(s.rows_rejected for s in finished),
            "rows_per_second": round(rows_in / elapsed, 1) if elapsed > 0 else 0.0,
            "start_time": job.start_time,
            "completion_time": job.completion_time,
            "shards": shards,
            "conditions": conditions,
        }
    )


def batch_notes(old: ModelBatchJobStatus, new: ModelBatchJobStatus) -> tuple[Note, ...]:
    """Events for what changed: a shard failed for good (by index), a shard retried, the job done."""
    before = {s.index: s for s in old.shards}
    notes: list[Note] = []
    for shard in new.shards:
        was = before.get(shard.index)
        if shard.phase == ShardPhase.FAILED and (was is None or was.phase != ShardPhase.FAILED):
            notes.append(
                Note(EventType.WARNING, Reason.SHARD_FAILED, f"shard {shard.index} failed: {shard.message}")
            )
        elif shard.phase != ShardPhase.FAILED and shard.failures > (was.failures if was else 0):
            notes.append(
                Note(
                    EventType.WARNING,
                    Reason.SHARD_RETRIED,
                    f"shard {shard.index} failed {shard.failures} time(s), retried: {shard.message}",
                )
            )
    if new.phase != old.phase:
        if new.phase == BatchPhase.SUCCEEDED:
            notes.append(
                Note(
                    EventType.NORMAL,
                    Reason.SUCCEEDED,
                    f"scored {new.rows_done} rows ({new.rows_failed} rejected) in {new.shards_total} shards",
                )
            )
        elif new.phase == BatchPhase.FAILED:
            notes.append(Note(EventType.WARNING, Reason.SHARDS_FAILED, new.message))
        elif new.phase == BatchPhase.INVALID:
            notes.append(Note(EventType.WARNING, Reason.INVALID_SPEC, new.message))
    return tuple(notes)


def invalid_batch_status(
    previous: ModelBatchJobStatus, problems: Sequence[str], *, generation: int | None, now: datetime
) -> ModelBatchJobStatus:
    """A spec the operator refuses (it does not parse, or the guardrails refuse it): Stalled,
    every problem listed, nothing created."""
    message = "; ".join(problems)
    conditions = kstatus_conditions(
        previous.conditions,
        state=ConditionType.STALLED,
        reason=Reason.INVALID_SPEC,
        message=message,
        generation=generation,
        now=now,
    )
    return ModelBatchJobStatus(
        observed_generation=generation,
        phase=BatchPhase.INVALID,
        message=message[:32768],
        conditions=conditions,
        shards=list(previous.shards),
        model=previous.model,
        job_name=previous.job_name,
    )


ENDED = frozenset({BatchPhase.SUCCEEDED, BatchPhase.FAILED})
"""Phases after which nothing changes: the job's daemon stops."""


def missing_pins(model: ModelSpec) -> list[str]:
    """The fields a model scored offline needs and lacks: a pinned artifact and its schema."""
    pins = (
        ("uri", model.uri),
        ("sha256", model.sha256),
        ("format", model.format),
        ("featureSchema", model.feature_schema),
    )
    return [name for name, value in pins if value is None]
