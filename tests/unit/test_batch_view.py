"""`kubectl rollwise batch`: a ModelBatchJob's progress rendered from its status alone, and the
pod and Job bodies `kube/batch.py` turns into the plan's observed values."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from rollwise.api.batch import ModelBatchJob, ShardPhase
from rollwise.cli.batch_view import batch_view, progress_bar
from rollwise.kube.batch import observed_job, observed_pod
from rollwise.plan.batch import Unresolved, pinned, resolve_model
from rollwise.plan.jobs import ObservedJob, PodPhase

from tests.unit.cli_objects import render
from tests.unit.test_batch_job import PODS, RUNNING_JOB, T0, UID, _status, job_of, manifest


def _with_status(job: ObservedJob, pods: list[Any], shards: int = 4) -> ModelBatchJob:
    mbj = job_of(manifest(shards=shards))
    model = resolve_model(mbj, None)
    assert not isinstance(model, Unresolved)
    status = _status(job, pods, mbj).model_copy(update={"model": pinned(model, mbj)})
    return mbj.model_copy(update={"status": status})


@pytest.mark.parametrize(
    ("done", "total", "bar"),
    [
        pytest.param(0, 4, "[..........] 0/4", id="none"),
        pytest.param(3, 4, "[#######...] 3/4", id="three quarters rounds down"),
        pytest.param(999, 1000, "[#########.] 999/1000", id="never full before the last"),
        pytest.param(4, 4, "[##########] 4/4", id="all"),
    ],
)
def test_the_shard_bar(done: int, total: int, bar: str) -> None:
    assert progress_bar(done, total, width=10) == bar


def test_the_view_lists_each_shard_with_its_state_rows_and_why() -> None:
    text = render(batch_view(_with_status(RUNNING_JOB, PODS), T0 + timedelta(minutes=1)))
    lines = text.splitlines()
    assert lines[0].startswith("ml/nightly  Running  2/4 shards scored, 1 running, 1 failed")
    assert f"model    iris v1 (inline) sha256 {'a' * 12}" in text
    assert "shards   [###############...............] 2/4  failed 1" in text
    assert "rows     1,990 scored, 10 rejected  33.3 rows/s  elapsed 1m00s" in text
    row = {line.split()[0]: line for line in lines if line.strip()[:1].isdigit()}
    assert row["0"].split() == ["0", "Succeeded", "990", "10", "100"]
    assert row["1"].split()[:6] == ["1", "Succeeded", "1", "1,000", "0", "50"]
    assert "Failed" in row["2"] and "part-2.parquet: not a Parquet file" in row["2"]
    assert "Running" in row["3"] and "attempt 2 after: OSError: no space left" in row["3"]


def test_with_many_shards_only_the_unfinished_are_listed_unless_all() -> None:
    done = ObservedJob(name="nightly", owned=True, completed_indexes=frozenset(range(29)), start_time=T0)
    mbj = _with_status(done, [], shards=30)
    assert [s.phase for s in mbj.status.shards].count(ShardPhase.SUCCEEDED) == 29
    text = render(batch_view(mbj, T0))
    assert "(29 succeeded shards not shown; --all lists them)" in text
    every = render(batch_view(mbj, T0, all_shards=True))
    assert "not shown" not in every and every.count("Succeeded") == 29


# ---- kube/batch.py's translation of live bodies --------------------------------------------------


def _pod_body(
    phase: str, *, index: str | None = "2", code: int | None = 3, message: str = "{}"
) -> dict[str, Any]:
    annotations = {} if index is None else {"batch.kubernetes.io/job-completion-index": index}
    terminated = None if code is None else {"exitCode": code, "message": message}
    return {
        "metadata": {
            "name": "nightly-2-abcde",
            "annotations": annotations,
            "creationTimestamp": "2026-12-07T12:00:00Z",
        },
        "status": {
            "phase": phase,
            "containerStatuses": [
                {"name": "shard", "state": {"terminated": terminated} if terminated else {"running": {}}}
            ],
        },
    }


def test_a_pod_body_gives_its_index_exit_code_and_termination_message() -> None:
    pod = observed_pod(_pod_body("Failed", message='{"shard":2}'))
    assert pod is not None
    assert (pod.index, pod.phase, pod.exit_code, pod.message) == (2, PodPhase.FAILED, 3, '{"shard":2}')
    assert pod.created == T0
    running = observed_pod(_pod_body("Running", code=None))
    assert running is not None and running.exit_code is None and running.phase == PodPhase.RUNNING
    assert observed_pod(_pod_body("Failed", index=None)) is None, "not a pod of an Indexed Job"


def test_a_job_body_gives_its_index_sets_end_and_owner() -> None:
    body = {
        "metadata": {
            "name": "nightly",
            "ownerReferences": [{"controller": True, "uid": UID, "kind": "ModelBatchJob"}],
        },
        "status": {
            "completedIndexes": "0-1,3",
            "failedIndexes": "2",
            "startTime": "2026-12-07T12:00:00Z",
            "conditions": [
                {"type": "FailureTarget", "status": "True"},
                {"type": "Failed", "status": "True", "message": "Job has failed indexes"},
            ],
        },
    }
    job = observed_job(body, UID)
    assert job.owned and job.failed and not job.complete
    assert (job.completed_indexes, job.failed_indexes) == ({0, 1, 3}, {2})
    assert job.failure_message == "Job has failed indexes" and job.start_time == T0
    assert not observed_job(body, "someone-else").owned
