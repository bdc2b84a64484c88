"""The operator's side of batch scoring (#20): ModelBatchJob's validation, the Indexed Job it
becomes, and the status it reads back from the shards' termination messages. No cluster."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from rollwise.api.batch import BatchPhase, ModelBatchJob, ModelBatchJobStatus, ShardPhase
from rollwise.api.v1alpha1 import ConditionStatus, ConditionType, ModelDeployment, Reason
from rollwise.kube.batch import observed_pod
from rollwise.plan.batch import (
    Unresolved,
    batch_args,
    batch_notes,
    batch_status,
    desired_job,
    pod_failure_policy,
    resolve_model,
)
from rollwise.plan.decision import EventType
from rollwise.plan.guardrails import Guardrails, batch_violations
from rollwise.plan.jobs import ObservedJob, ObservedPod, PodPhase, parse_indexes
from rollwise.settings import SettingsError, from_env
from rollwise_contract.base import describe_errors
from rollwise_contract.batch import ExitCode, ShardReport, ShardState
from rollwise_serving.batch import Summary, checker_of, parse_batch_settings

from tests.unit.admission import cel_rejections
from tests.unit.manifests import SHA, base

IMAGE = "reg.local/rollwise/serving:0.1.0"
BATCH_IMAGE = "reg.local/rollwise/serving:0.1.0-batch"
UID = "0b7c-uid"
T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
SCHEMA = {"features": [{"name": "sepal_length"}, {"name": "sepal_width"}]}


def manifest(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "rollwise.dev/v1alpha1",
        "kind": "ModelBatchJob",
        "metadata": {"name": "nightly", "namespace": "ml", "uid": UID, "generation": 1},
        "spec": {
            "input": {"uri": "s3://data/day=2026-12-01/", "format": "parquet"},
            "model": {
                "inline": {
                    "name": "iris",
                    "version": "v1",
                    "uri": "pvc://models/iris-v1.joblib",
                    "format": "sklearn",
                    "sha256": SHA,
                    "featureSchema": SCHEMA,
                }
            },
            "output": {"uri": "pvc://scores/run-1"},
            "keepColumns": ["id"],
            "shards": 4,
        },
    }
    body["spec"].update(spec)
    return body


def job_of(body: dict[str, Any]) -> ModelBatchJob:
    return ModelBatchJob.model_validate(body)


# ---- validation ---------------------------------------------------------------------------------

OUT_MSG = (
    "spec.output.uri: must be a directory every shard can write; use pvc://claim/path (a "
    "ReadWriteMany claim when shards may run on several nodes)"
)
ONE_MSG = "spec.model: set exactly one of fromDeployment and inline"
PINNED_MSG = (
    "spec.model.inline: a batch job scores a pinned artifact; set uri, format and sha256 (sha256sum <file>)"
)
SCHEMA_MSG = (
    "spec.model.inline.featureSchema: required: the shards check every row against it and reject "
    "the rows that break it"
)
PAR_MSG = (
    "spec.parallelism: is more than shards; pods beyond the shard count would never start; lower it "
    "or leave it unset"
)
IN_MSG = (
    "spec.input.uri: unsupported location; use file:///path, pvc://claim/path, http(s)://host/path "
    "or s3://bucket/key"
)


def _inline_without(*keys: str) -> dict[str, Any]:
    inline = copy.deepcopy(manifest()["spec"]["model"]["inline"])
    for key in keys:
        del inline[key]
    return {"inline": inline}


@pytest.mark.parametrize(
    ("spec", "lines"),
    [
        pytest.param({"output": {"uri": "s3://bucket/out/"}}, [OUT_MSG], id="output on S3 is refused"),
        pytest.param({"output": {"uri": "file:///tmp/out"}}, [OUT_MSG], id="output in the pod is refused"),
        pytest.param({"input": {"uri": "ftp://host/x.csv"}}, [IN_MSG], id="an ftp input is refused"),
        pytest.param(
            {"model": {**_inline_without(), "fromDeployment": {"name": "iris"}}},
            [ONE_MSG],
            id="both model sources",
        ),
        pytest.param({"model": {}}, [ONE_MSG], id="no model source"),
        pytest.param(
            {"model": {"inline": {**_inline_without("sha256")["inline"], "format": "onnx"}}},
            [PINNED_MSG],
            id="an inline onnx model without digest (a server would load it; a batch job pins it)",
        ),
        pytest.param({"model": _inline_without("featureSchema")}, [SCHEMA_MSG], id="no feature schema"),
        pytest.param({"parallelism": 5}, [PAR_MSG], id="parallelism above shards"),
    ],
)
def test_a_bad_batch_job_is_refused_with_these_lines(spec: dict[str, Any], lines: list[str]) -> None:
    body = manifest(**spec)
    with pytest.raises(ValidationError) as err:
        job_of(body)
    assert describe_errors(err.value) == lines
    assert cel_rejections(body, "modelbatchjobs") == lines


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        pytest.param({"shards": 0}, "spec.shards", id="0 shards"),
        pytest.param({"shards": 1001}, "spec.shards", id="1001 shards"),
        pytest.param({"keepColumns": ["a,b"]}, "spec.keepColumns[0]", id="a comma in a kept column"),
        pytest.param({"backoffLimitPerIndex": -1}, "spec.backoffLimitPerIndex", id="negative retries"),
    ],
)
def test_bounds_are_schema_errors_naming_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        job_of(manifest(**spec))
    assert [line.split(":", 1)[0] for line in describe_errors(err.value)] == [field]


def test_a_long_name_is_refused_since_pods_are_named_after_it() -> None:
    body = manifest()
    body["metadata"]["name"] = "n" * 53
    with pytest.raises(ValidationError) as err:
        job_of(body)
    assert describe_errors(err.value)[0].startswith("metadata.name: must start with a letter")
    assert len(cel_rejections(body, "modelbatchjobs")) == 1


def test_a_good_batch_job_passes_both_judges() -> None:
    body = manifest()
    job_of(body)
    assert cel_rejections(body, "modelbatchjobs") == []
    ref = manifest(model={"fromDeployment": {"name": "iris", "track": "candidate"}})
    assert job_of(ref).spec.model.from_deployment is not None
    assert cel_rejections(ref, "modelbatchjobs") == []


# ---- the model ----------------------------------------------------------------------------------


def _deployment(**status: Any) -> ModelDeployment:
    md = base()
    md["spec"]["model"]["featureSchema"] = SCHEMA
    md["status"] = status
    return ModelDeployment.model_validate(md)


def test_the_stable_track_pins_the_model_in_status_stable_not_the_spec() -> None:
    md = base()
    md["spec"]["model"]["featureSchema"] = SCHEMA
    stable_model = {**md["spec"]["model"], "version": "v0", "uri": "file:///models/v0.joblib"}
    deployment = _deployment(stable={"model": stable_model, "runtime": {}})
    mbj = job_of(manifest(model={"fromDeployment": {"name": "iris"}}))
    model = resolve_model(mbj, deployment)
    assert not isinstance(model, Unresolved)
    assert (model.version, model.uri) == ("v0", "file:///models/v0.joblib")


@pytest.mark.parametrize(
    ("track", "deployment", "message", "waiting"),
    [
        pytest.param(
            "stable", None, "is not in namespace ml; create it or fix the name", True, id="no such MD"
        ),
        pytest.param("stable", {}, "has no stable model yet", True, id="not Healthy yet"),
        pytest.param(
            "candidate", {}, "has no candidate being rolled out; use track: stable", True, id="no rollout"
        ),
    ],
)
def test_an_unresolvable_deployment_says_why(
    track: str, deployment: dict[str, Any] | None, message: str, waiting: bool
) -> None:
    mbj = job_of(manifest(model={"fromDeployment": {"name": "iris", "track": track}}))
    got = resolve_model(mbj, None if deployment is None else _deployment(**deployment))
    assert isinstance(got, Unresolved)
    assert got.message.startswith("spec.model.fromDeployment: ModelDeployment iris ")
    assert message in got.message and got.waiting is waiting


def test_a_candidate_without_a_feature_schema_cannot_be_batch_scored() -> None:
    md = base()  # no feature schema
    md["status"] = {"candidateVersion": "v2"}
    mbj = job_of(manifest(model={"fromDeployment": {"name": "iris", "track": "candidate"}}))
    got = resolve_model(mbj, ModelDeployment.model_validate(md))
    assert isinstance(got, Unresolved) and not got.waiting
    assert "has no featureSchema" in got.message


# ---- the Job ------------------------------------------------------------------------------------


def _desired(body: dict[str, Any] | None = None) -> dict[str, Any]:
    mbj = job_of(body or manifest())
    model = resolve_model(mbj, None)
    assert not isinstance(model, Unresolved)
    return desired_job(mbj, model, owner_uid=UID, batch_image=BATCH_IMAGE)


def test_the_job_is_indexed_one_index_per_shard_owned_by_the_batch_job() -> None:
    job = _desired(manifest(parallelism=2, backoffLimitPerIndex=5))
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert job["metadata"]["name"] == "nightly" and job["metadata"]["namespace"] == "ml"
    assert job["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "rollwise.dev/v1alpha1",
            "kind": "ModelBatchJob",
            "name": "nightly",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert (spec["completions"], spec["parallelism"], spec["backoffLimitPerIndex"]) == (4, 2, 5)
    assert spec["maxFailedIndexes"] == 4, "one failed shard must not stop the others"
    assert "backoffLimit" not in spec
    assert spec["template"]["metadata"]["labels"]["rollwise.dev/model-batch-job"] == "nightly"
    assert _desired()["spec"]["parallelism"] == 4, "unset parallelism runs every shard at once"


def test_the_pod_is_locked_down_like_the_serving_pods() -> None:
    pod = _desired()["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["image"] == BATCH_IMAGE and container["command"] == ["rollwise-batch"]
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["terminationMessagePath"] == "/dev/termination-log"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["pvc-models"]["readOnly"] is True, "the model's claim is read-only"
    assert mounts["pvc-scores"]["readOnly"] is False, "the output's claim is written"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["pvc-scores"]["persistentVolumeClaim"] == {"claimName": "scores", "readOnly": False}


def test_a_shared_claim_for_model_and_output_is_mounted_once_writable() -> None:
    body = manifest(output={"uri": "pvc://models/out/run-1"})
    pod = _desired(body)["spec"]["template"]["spec"]
    names = [v["name"] for v in pod["volumes"]]
    assert names == ["tmp", "pvc-models"]
    assert pod["volumes"][1]["persistentVolumeClaim"]["readOnly"] is False


def test_the_args_are_accepted_by_rollwise_batch_s_own_parser() -> None:
    """The contract, both sides: what the operator writes is what the shard reads."""
    mbj = job_of(manifest(output={"uri": "pvc://scores/run-1", "format": "csv"}))
    model = resolve_model(mbj, None)
    assert not isinstance(model, Unresolved)
    args = [str(a) for a in batch_args(mbj, model)]
    settings = parse_batch_settings(args, {"JOB_COMPLETION_INDEX": "2"})
    assert settings.model_uri == "file:///mnt/pvc/models/iris-v1.joblib"
    assert settings.sha256 == SHA
    assert settings.input == "s3://data/day=2026-12-01/"
    assert str(settings.output) == "/mnt/pvc/scores/run-1"
    assert (settings.shard_index, settings.shard_count) == (2, 4)
    assert settings.keep == ("id",) and settings.output_format == "csv"
    checker = checker_of(settings.feature_schema, settings.features)
    assert checker.names == ("sepal_length", "sepal_width")


def test_the_pod_failure_policy_fails_the_index_on_permanent_exits_only() -> None:
    rules = pod_failure_policy()["rules"]
    assert isinstance(rules, list)
    fail_index = [r for r in rules if isinstance(r, dict) and r["action"] == "FailIndex"]
    assert fail_index == [
        {"action": "FailIndex", "onExitCodes": {"containerName": "shard", "operator": "In", "values": [2, 3]}}
    ]
    values = fail_index[0]["onExitCodes"]["values"]  # type: ignore[index]  # JSON shape asserted above
    assert ExitCode.PERMANENT in values and ExitCode.SETTINGS in values
    assert ExitCode.RETRY not in values and ExitCode.SCORED not in values
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules


# ---- status -------------------------------------------------------------------------------------


def report(shard: int, status: str = "succeeded", **fields: Any) -> str:
    summary = Summary(shard, 4, status=ShardState(status), **fields)
    return summary.termination_message()


def pod(
    index: int, phase: PodPhase, minute: int = 0, *, code: int | None = None, message: str = ""
) -> ObservedPod:
    return ObservedPod(
        name=f"nightly-{index}-{minute}",
        index=index,
        phase=phase,
        created=T0 + timedelta(minutes=minute),
        exit_code=code,
        message=message,
    )


STARTED = T0
PODS = [
    pod(0, PodPhase.SUCCEEDED, message=report(0, rows_in=1000, rows_out=990, rows_rejected=10, seconds=10.0)),
    # shard 1: a killed download, retried, then scored
    pod(1, PodPhase.FAILED, 0, code=1, message=report(1, "failed", error="StorageError: connection reset")),
    pod(1, PodPhase.SUCCEEDED, 1, message=report(1, rows_in=1000, rows_out=1000, seconds=20.0)),
    # shard 2: a corrupt file, failed for good
    pod(
        2, PodPhase.FAILED, 0, code=3, message=report(2, "failed", error="part-2.parquet: not a Parquet file")
    ),
    # shard 3: failed once, running again
    pod(3, PodPhase.FAILED, 0, code=1, message=report(3, "failed", error="OSError: no space left")),
    pod(3, PodPhase.RUNNING, 2),
]


def _status(
    job: ObservedJob, pods: list[ObservedPod], mbj: ModelBatchJob | None = None
) -> ModelBatchJobStatus:
    return batch_status(
        mbj or job_of(manifest()), job=job, pods=pods, model=None, now=T0 + timedelta(minutes=1)
    )


RUNNING_JOB = ObservedJob(
    name="nightly",
    owned=True,
    completed_indexes=parse_indexes("0-1"),
    failed_indexes=parse_indexes("2"),
    start_time=STARTED,
)


def test_each_shard_is_read_from_its_pods_and_the_job_s_indexes() -> None:
    status = _status(RUNNING_JOB, PODS)
    by_index = {s.index: s for s in status.shards}
    assert [by_index[i].phase for i in range(4)] == [
        ShardPhase.SUCCEEDED,
        ShardPhase.SUCCEEDED,
        ShardPhase.FAILED,
        ShardPhase.RUNNING,
    ]
    assert (by_index[0].rows_out, by_index[0].rows_rejected, by_index[0].rows_per_second) == (990, 10, 100.0)
    assert by_index[1].failures == 1, "the retried shard counts its failed pod"
    assert by_index[2].message == "part-2.parquet: not a Parquet file"
    assert by_index[3].failures == 1
    assert by_index[3].message == "attempt 2 after: OSError: no space left"
    assert (status.rows_in, status.rows_done, status.rows_failed) == (2000, 1990, 10)
    assert status.rows_per_second == round(2000 / 60, 1), "finished rows over the job's wall time"
    assert (status.shards_succeeded, status.shards_failed, status.phase) == (2, 1, BatchPhase.RUNNING)
    assert status.message == "2/4 shards scored, 1 running, 1 failed"


def test_a_failed_pod_with_no_live_successor_is_retrying() -> None:
    status = _status(RUNNING_JOB, PODS[:-1])
    assert status.shards[3].phase == ShardPhase.RETRYING


def test_a_failed_job_is_stalled_naming_the_failed_shard_by_index() -> None:
    job = ObservedJob(
        name="nightly",
        owned=True,
        completed_indexes=parse_indexes("0,1,3"),
        failed_indexes=parse_indexes("2"),
        failed=True,
        start_time=STARTED,
        completion_time=STARTED + timedelta(seconds=40),
    )
    pods = [
        *PODS[:-1],
        pod(3, PodPhase.SUCCEEDED, 2, message=report(3, rows_in=500, rows_out=500, seconds=5)),
    ]
    status = _status(job, pods)
    assert status.phase == BatchPhase.FAILED
    assert status.message == "1 of 4 shards failed: shard 2: part-2.parquet: not a Parquet file"
    cond = {c.type: c for c in status.conditions}
    assert cond[ConditionType.STALLED].status == ConditionStatus.TRUE
    assert cond[ConditionType.STALLED].reason == Reason.SHARDS_FAILED
    assert cond[ConditionType.READY].status == ConditionStatus.FALSE
    assert status.rows_per_second == round(2500 / 40, 1), "measured to the completion time, not now"


def test_a_complete_job_is_ready_and_says_so_once() -> None:
    job = ObservedJob(
        name="nightly", owned=True, completed_indexes=parse_indexes("0-3"), complete=True, start_time=STARTED
    )
    pods = [
        pod(i, PodPhase.SUCCEEDED, message=report(i, rows_in=10, rows_out=9, rows_rejected=1))
        for i in range(4)
    ]
    before = _status(RUNNING_JOB, PODS)
    status = _status(job, pods, job_of({**manifest(), "status": before.model_dump(mode="json")}))
    assert status.phase == BatchPhase.SUCCEEDED and (status.rows_done, status.rows_failed) == (36, 4)
    cond = {c.type: c for c in status.conditions}
    assert cond[ConditionType.READY].status == ConditionStatus.TRUE
    assert cond[ConditionType.RECONCILING].status == ConditionStatus.FALSE
    notes = batch_notes(before, status)
    assert [(n.type, n.reason) for n in notes] == [(EventType.NORMAL, Reason.SUCCEEDED)]
    assert notes[0].message == "scored 36 rows (4 rejected) in 4 shards"
    assert batch_notes(status, status) == (), "an unchanged status posts nothing again"


def test_events_name_the_failed_and_the_retried_shard_by_index() -> None:
    first = _status(ObservedJob(name="nightly", owned=True, start_time=STARTED), [])
    notes = batch_notes(first, _status(RUNNING_JOB, PODS))
    assert [(n.reason, n.message) for n in notes] == [
        (
            Reason.SHARD_RETRIED,
            "shard 1 failed 1 time(s), retried: attempt 2 scored after: StorageError: connection reset",
        ),
        (Reason.SHARD_FAILED, "shard 2 failed: part-2.parquet: not a Parquet file"),
        (Reason.SHARD_RETRIED, "shard 3 failed 1 time(s), retried: attempt 2 after: OSError: no space left"),
    ]


def test_a_shard_whose_pods_are_gone_keeps_its_rows_from_the_previous_status() -> None:
    before = _status(RUNNING_JOB, PODS)
    mbj = job_of({**manifest(), "status": before.model_dump(mode="json")})
    after = _status(RUNNING_JOB, PODS[3:], mbj)  # shards 0 and 1's pods deleted
    assert (after.shards[0].rows_out, after.shards[1].rows_out) == (990, 1000)


def test_a_pod_killed_before_its_report_is_failed_by_exit_code() -> None:
    job = ObservedJob(name="nightly", owned=True, failed_indexes=frozenset({0}), start_time=STARTED)
    status = _status(job, [pod(0, PodPhase.FAILED, code=137)])
    assert status.shards[0].message == "exit code 137"
    status = _status(job, [pod(0, PodPhase.FAILED, code=3, message="not json")])
    assert status.shards[0].message == "exit code 3 (a permanent problem)"


def test_a_foreign_job_of_the_same_name_is_a_conflict_not_ours() -> None:
    status = _status(ObservedJob(name="nightly", owned=False), [])
    assert status.phase == BatchPhase.INVALID and status.shards == []
    assert status.conditions[0].type == ConditionType.READY
    stalled = {c.type: c for c in status.conditions}[ConditionType.STALLED]
    assert stalled.reason == Reason.JOB_CONFLICT and "not owned by this ModelBatchJob" in stalled.message


def test_an_unresolved_model_is_reconciling_while_it_may_come() -> None:
    mbj = job_of(manifest())
    status = batch_status(
        mbj, job=None, pods=[], model=None, now=T0, problem=Unresolved("wait", waiting=True)
    )
    assert status.phase == BatchPhase.PENDING
    assert {c.type: c.status for c in status.conditions}[ConditionType.RECONCILING] == ConditionStatus.TRUE
    status = batch_status(mbj, job=None, pods=[], model=None, now=T0, problem=Unresolved("no", waiting=False))
    assert status.phase == BatchPhase.INVALID


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", set(), id="empty"),
        pytest.param(None, set(), id="unset"),
        pytest.param("3", {3}, id="one"),
        pytest.param("0-2,5,7-8", {0, 1, 2, 5, 7, 8}, id="ranges and singles"),
    ],
)
def test_job_index_sets_are_parsed(text: str | None, expected: set[int]) -> None:
    assert parse_indexes(text) == expected


def test_the_server_s_summary_is_the_operator_s_report() -> None:
    """`rollwise_serving.batch.Summary` writes what `ShardReport` reads, even with a cut error."""
    summary = Summary(7, 9, status=ShardState.FAILED, rows_in=5, error="x" * 10_000)
    parsed = ShardReport.model_validate_json(summary.termination_message())
    assert (parsed.shard, parsed.shards, parsed.status, parsed.rows_in) == (7, 9, ShardState.FAILED, 5)
    assert parsed.error is not None and 0 < len(parsed.error) < 10_000
    assert json.loads(summary.termination_message())["rowsIn"] == 5


# ---- guardrails ---------------------------------------------------------------------------------


def test_guardrails_bound_the_batch_pods_like_the_serving_pods() -> None:
    body = manifest(image="evil.io/miner:1", nodeSelector={"pool": "gpu"})
    rails = Guardrails(allowed_pvcs=["models"], allowed_node_selectors=["pool=ml-*"])
    assert batch_violations(job_of(body), rails, serving_image=IMAGE, batch_image=BATCH_IMAGE) == [
        "spec.image: evil.io/miner:1 is not an allowed image (guardrails.allowedImages: "
        "reg.local/rollwise/serving:*, reg.local/rollwise/serving@*); leave it unset for the bundled "
        "server or ask the administrator to allow it",
        "spec.nodeSelector: pool=gpu is not allowed (guardrails.allowedNodeSelectors); remove it or ask "
        "the administrator",
        "spec.output.uri: PVC scores is not one a ModelBatchJob may mount (guardrails.allowedPvcs); "
        "use an allowed claim",
    ]
    assert (
        batch_violations(job_of(manifest()), Guardrails(), serving_image=IMAGE, batch_image=BATCH_IMAGE) == []
    )


@pytest.mark.parametrize(
    ("image", "runs"),
    [
        pytest.param(None, BATCH_IMAGE, id="no image runs the batch image, not the serving image"),
        pytest.param(
            "reg.local/rollwise/serving:0.1.0-batch-xgboost",
            "reg.local/rollwise/serving:0.1.0-batch-xgboost",
            id="a named image runs as named",
        ),
    ],
)
def test_the_job_runs_the_batch_image_unless_the_spec_names_one(image: str | None, runs: str) -> None:
    body = manifest() if image is None else manifest(image=image)
    (container,) = _desired(body)["spec"]["template"]["spec"]["containers"]
    assert container["image"] == runs != IMAGE


SEPARATE = "reg.local/rollwise/serving-batch:7"
"""A batch image an administrator keeps in a repository of its own."""


@pytest.mark.parametrize(
    ("image", "allowed"),
    [
        pytest.param(SEPARATE, True, id="the batch image itself"),
        pytest.param(
            "reg.local/rollwise/serving-batch:8-xgboost",
            True,
            id="another tag of the batch image's repository",
        ),
        pytest.param(
            "reg.local/rollwise/serving-batch@sha256:" + "a" * 64,
            True,
            id="a digest of the batch image's repository",
        ),
        pytest.param(
            "reg.local/rollwise/serving:0.1.0-batch", True, id="a tag of the serving image's repository"
        ),
        pytest.param(
            "reg.local/rollwise/serving-batchy:1", False, id="a repository that only starts like it"
        ),
        pytest.param("evil.io/miner:1", False, id="anything else"),
    ],
)
def test_by_default_a_batch_job_may_name_the_batch_or_the_serving_repository(
    image: str, allowed: bool
) -> None:
    got = batch_violations(
        job_of(manifest(image=image)), Guardrails(), serving_image=IMAGE, batch_image=SEPARATE
    )
    assert got == (
        []
        if allowed
        else [
            f"spec.image: {image} is not an allowed image (guardrails.allowedImages: "
            "reg.local/rollwise/serving-batch:*, reg.local/rollwise/serving-batch@*, "
            "reg.local/rollwise/serving:*, reg.local/rollwise/serving@*); leave it unset for the "
            "bundled server or ask the administrator to allow it"
        ]
    )


def test_a_listed_image_list_replaces_the_defaults_for_batch_jobs_too() -> None:
    rails = Guardrails(allowed_images=["team.io/*"])
    mbj = job_of(manifest(image="reg.local/rollwise/serving-batch:8"))
    assert batch_violations(mbj, rails, serving_image=IMAGE, batch_image=SEPARATE) != []
    exact = job_of(manifest(image=SEPARATE))
    assert batch_violations(exact, rails, serving_image=IMAGE, batch_image=SEPARATE) == [], (
        "its own image stays"
    )


# ---- the operator's batch image ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "batch_image"),
    [
        pytest.param(
            {}, "rollwise/serving:0.1.0-batch", id="nothing set: the default serving image's batch variant"
        ),
        pytest.param(
            {"ROLLWISE_SERVING_IMAGE": "reg:5000/rollwise/serving:2.0"},
            "reg:5000/rollwise/serving:2.0-batch",
            id="the serving image's tag plus -batch, port kept",
        ),
        pytest.param(
            {"ROLLWISE_SERVING_IMAGE": "rollwise/serving:2.0@sha256:" + "b" * 64},
            "rollwise/serving:2.0-batch",
            id="the serving image's digest is not the variant's",
        ),
        pytest.param(
            {"ROLLWISE_SERVING_IMAGE": "rollwise/serving:2.0", "ROLLWISE_BATCH_IMAGE": "team/scorer:3"},
            "team/scorer:3",
            id="ROLLWISE_BATCH_IMAGE wins",
        ),
        pytest.param(
            {"ROLLWISE_SERVING_IMAGE": "reg:5000/serving", "ROLLWISE_BATCH_IMAGE": "reg:5000/b:1"},
            "reg:5000/b:1",
            id="a set batch image needs no tag on the serving image",
        ),
    ],
)
def test_the_operator_reads_its_batch_image(env: dict[str, str], batch_image: str) -> None:
    assert from_env(env).batch_image == batch_image


def test_a_serving_image_without_a_tag_needs_the_batch_image_set() -> None:
    with pytest.raises(
        SettingsError,
        match=(
            r"ROLLWISE_BATCH_IMAGE is unset and ROLLWISE_SERVING_IMAGE='reg:5000/serving' has no tag "
            r"to add -batch to; set ROLLWISE_BATCH_IMAGE, e.g. rollwise/serving:0.1.0-batch"
        ),
    ):
        from_env({"ROLLWISE_SERVING_IMAGE": "reg:5000/serving"})


def test_the_batch_resync_is_read_and_nonsense_is_refused_naming_the_variable() -> None:
    assert from_env({}).batch_resync_seconds == 300.0
    assert from_env({"ROLLWISE_BATCH_RESYNC_SECONDS": "60"}).batch_resync_seconds == 60.0
    with pytest.raises(
        SettingsError, match=r"ROLLWISE_BATCH_RESYNC_SECONDS=1 is out of range; use a value from 5 to 86400"
    ):
        from_env({"ROLLWISE_BATCH_RESYNC_SECONDS": "1"})
    with pytest.raises(SettingsError, match=r"ROLLWISE_BATCH_RESYNC_SECONDS='soon' is not a whole number"):
        from_env({"ROLLWISE_BATCH_RESYNC_SECONDS": "soon"})


# ---- properties ---------------------------------------------------------------------------------

_PHASES = st.sampled_from([PodPhase.PENDING, PodPhase.RUNNING, PodPhase.SUCCEEDED, PodPhase.FAILED])


@settings(max_examples=200, deadline=None)
@given(
    shards=st.integers(min_value=1, max_value=8),
    data=st.data(),
)
def test_any_world_gives_one_entry_per_shard_and_totals_that_add_up(shards: int, data: st.DataObject) -> None:
    indexes = st.integers(min_value=0, max_value=shards - 1)
    completed = data.draw(st.frozensets(indexes))
    failed = data.draw(st.frozensets(indexes)) - completed
    pods = [
        pod(
            i,
            phase,
            minute,
            code=None if phase != PodPhase.FAILED else data.draw(st.sampled_from([1, 3, 137])),
            message=report(i, rows_in=rows, rows_out=rows - rejected, rows_rejected=rejected, seconds=1.0)
            if phase == PodPhase.SUCCEEDED
            else "",
        )
        for minute, (i, phase, rows, rejected) in enumerate(
            data.draw(
                st.lists(
                    st.tuples(indexes, _PHASES, st.integers(10, 100), st.integers(0, 10)), max_size=3 * shards
                )
            )
        )
    ]
    job = ObservedJob(
        name="nightly", owned=True, completed_indexes=completed, failed_indexes=failed, start_time=T0
    )
    status = _status(job, pods, job_of(manifest(shards=shards)))
    assert [s.index for s in status.shards] == list(range(shards))
    for shard in status.shards:
        assert (shard.phase == ShardPhase.SUCCEEDED) == (shard.index in completed)
        assert (shard.phase == ShardPhase.FAILED) == (shard.index in failed)
        assert shard.failures == sum(p.index == shard.index and p.phase == PodPhase.FAILED for p in pods)
    assert status.rows_done + status.rows_failed == status.rows_in
    assert status.rows_done == sum(s.rows_out for s in status.shards)
    assert (status.shards_succeeded, status.shards_failed) == (len(completed), len(failed))


def test_a_retry_whose_failed_pod_is_gone_is_counted_from_the_job_controllers_annotation() -> None:
    """A pod the API deleted is removed once the Job controller has counted it: only the count on
    the replacement pod (`batch.kubernetes.io/job-index-failure-count`) says the shard was retried."""
    body = {
        "metadata": {
            "name": "nightly-0-b",
            "creationTimestamp": "2026-12-07T10:00:00Z",
            "annotations": {
                "batch.kubernetes.io/job-completion-index": "0",
                "batch.kubernetes.io/job-index-failure-count": "1",
                "batch.kubernetes.io/job-index-ignored-failure-count": "1",
            },
        },
        "status": {"phase": "Succeeded"},
    }
    replacement = observed_pod(body)
    assert replacement is not None and replacement.earlier_failures == 2
    done = replace(replacement, message=report(0, rows_in=1000, rows_out=1000, seconds=10.0))
    job = ObservedJob(name="nightly", owned=True, completed_indexes=frozenset({0}), start_time=STARTED)
    first = _status(ObservedJob(name="nightly", owned=True, start_time=STARTED), [])
    status = _status(job, [done])
    assert status.shards[0].failures == 2
    assert status.shards[0].message.startswith("attempt 3 scored after: a failed pod that is gone")
    assert [n.reason for n in batch_notes(first, status)] == [Reason.SHARD_RETRIED]
    running = _status(
        ObservedJob(name="nightly", owned=True, start_time=STARTED), [replace(done, phase=PodPhase.RUNNING)]
    )
    assert (running.shards[0].phase, running.shards[0].failures) == (ShardPhase.RUNNING, 2)
