"""`kube/batch.reconcile_batch` against a recorded API: the Job is created once, a foreign Job is
never touched, a steady job writes nothing, an invalid one creates nothing. The kubernetes client
is replaced at the module's own I/O functions; what they are called with is asserted."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
import pytest
from kubernetes.client.exceptions import ApiException
from rollwise.kube import batch
from rollwise.plan.jobs import ObservedPod, PodPhase
from rollwise.settings import OperatorSettings

from tests.unit.test_batch_job import BATCH_IMAGE, IMAGE, T0, UID, manifest, report

NOW = T0 + dt.timedelta(minutes=2)


@dataclass
class FakeApi:
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: list[ObservedPod] = field(default_factory=list)
    created: list[Mapping[str, Any]] = field(default_factory=list)
    patches: list[Mapping[str, Any]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    listed: list[str] = field(default_factory=list)
    conflict_on_create: dict[str, Any] | None = None

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(batch, "_job_body", lambda api, ns, name: self.jobs.get(name))
        monkeypatch.setattr(batch, "fetch_pods", self._pods)
        monkeypatch.setattr(batch, "fetch_deployment", lambda api, ns, name: None)
        monkeypatch.setattr(batch, "create_job", self._create)
        monkeypatch.setattr(batch, "patch_batch_status", lambda api, ns, name, st: self.patches.append(st))
        monkeypatch.setattr(
            batch, "post_events", lambda api, body, notes: self.events.extend(n.message for n in notes)
        )

    def _pods(self, api: object, namespace: str, name: str) -> list[ObservedPod]:
        self.listed.append(name)
        return list(self.pods)

    def _create(self, api: object, namespace: str, job: Mapping[str, Any]) -> dict[str, Any]:
        if self.conflict_on_create is not None:
            self.jobs[job["metadata"]["name"]] = self.conflict_on_create
            raise ApiException(status=409)
        self.created.append(job)
        live = {**job, "status": {"startTime": T0.isoformat()}}
        self.jobs[job["metadata"]["name"]] = live
        return live


def settings() -> OperatorSettings:
    return OperatorSettings(
        serving_image=IMAGE,
        batch_image=BATCH_IMAGE,
        prometheus_url="",
        watch_namespace="",
        metrics_port=9100,
        liveness_endpoint="",
        peering="rollwise",
        peering_priority=0,
        resync_seconds=60,
        log_level="info",
    )


def _pass(fake: FakeApi, body: dict[str, Any]) -> dict[str, Any]:
    status = batch.reconcile_batch(object(), body, settings=settings(), now=NOW)  # type: ignore[arg-type]  # the fake replaces every call
    return batch.status_json(status)


def test_the_first_pass_creates_the_job_once_and_pins_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeApi()
    fake.install(monkeypatch)
    body = manifest()
    status = _pass(fake, body)
    assert [j["metadata"]["name"] for j in fake.created] == ["nightly"]
    assert fake.created[0]["metadata"]["ownerReferences"][0]["uid"] == UID
    (container,) = fake.created[0]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == BATCH_IMAGE, "the settings' batch image, not the serving image"
    assert status["phase"] == "Running" and status["jobName"] == "nightly"
    assert status["model"]["sha256"] == "a" * 64 and status["model"]["source"] == "inline"
    assert fake.patches == [status]
    # The next pass sees the Job and the status it wrote: no create, no write.
    body["status"] = status
    assert _pass(fake, body) == status
    assert len(fake.created) == 1 and len(fake.patches) == 1
    assert fake.listed == ["nightly", "nightly"]


def test_progress_is_written_and_a_failed_shard_posts_its_event(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeApi()
    fake.install(monkeypatch)
    body = manifest()
    body["status"] = _pass(fake, body)
    fake.jobs["nightly"]["status"] = {"startTime": T0.isoformat(), "failedIndexes": "2"}
    fake.pods = [
        ObservedPod("nightly-2-a", 2, PodPhase.FAILED, T0, 3, report(2, "failed", error="bad file")),
    ]
    status = _pass(fake, body)
    assert status["shards"][2]["phase"] == "Failed" and status["model"]["source"] == "inline"
    assert fake.events == ["shard 2 failed: bad file"]


def test_a_foreign_job_of_the_same_name_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    foreign = {"metadata": {"name": "nightly", "ownerReferences": [{"controller": True, "uid": "other"}]}}
    fake = FakeApi(conflict_on_create=foreign)
    fake.install(monkeypatch)
    status = _pass(fake, manifest())
    assert fake.created == [] and status["phase"] == "Invalid"
    assert "Job nightly exists and is not owned by this ModelBatchJob" in status["message"]
    assert fake.listed == [], "a foreign Job's pods are not even listed"


def test_an_invalid_spec_creates_nothing_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeApi()
    fake.install(monkeypatch)
    status = _pass(fake, manifest(output={"uri": "s3://out/"}))
    assert fake.created == [] and status["phase"] == "Invalid"
    assert status["message"].startswith("spec.output.uri: must be a directory every shard can write")
    assert fake.events == [status["message"]]


def test_a_pass_before_its_own_write_came_back_writes_and_announces_nothing_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Job event can wake the daemon before the event of its own status patch has refreshed the
    body: the pass plans from the status it wrote, not from the older one."""
    fake = FakeApi()
    fake.install(monkeypatch)
    stale = manifest()  # never refreshed: as if no event of our own had come back yet
    run = settings()
    written = batch.status_json(batch.reconcile_batch(object(), stale, settings=run, now=NOW))  # type: ignore[arg-type]  # the fake replaces every call
    fake.jobs["nightly"]["status"] = {"startTime": T0.isoformat(), "failedIndexes": "2"}
    fake.pods = [ObservedPod("nightly-2-a", 2, PodPhase.FAILED, T0, 3, report(2, "failed", error="bad file"))]
    for _ in range(3):
        status = batch.reconcile_batch(object(), stale, settings=run, now=NOW, written=written)  # type: ignore[arg-type]
        written = batch.status_json(status)
    assert fake.events == ["shard 2 failed: bad file"], "announced once"
    assert len(fake.patches) == 2, "one write when it started, one when the shard failed"
    # Without what it wrote, the same stale body makes the pass repeat both.
    batch.reconcile_batch(object(), stale, settings=run, now=NOW)  # type: ignore[arg-type]
    assert fake.events == ["shard 2 failed: bad file"] * 2 and len(fake.patches) == 3


class _Stopped:
    """Kopf's DaemonStopped as the loop reads it: falsy until set."""

    def __init__(self) -> None:
        self.flag = False

    def __bool__(self) -> bool:
        return self.flag


async def test_the_daemon_passes_on_each_wake_up_and_ends_with_the_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The daemon sleeps the whole batch resync between passes unless woken (the Job's events), and
    returns once a pass finds the job ended; each pass gets the status the one before wrote."""
    phases = iter(["Pending", "Running", "Running", "Succeeded"])
    seen: list[dict[str, Any] | None] = []

    def one_pass(api: object, body: object, *, settings: object, now: object, written: Any) -> Any:
        seen.append(written)
        return batch.ModelBatchJobStatus.model_validate({"phase": next(phases)})

    monkeypatch.setattr(batch, "reconcile_batch", one_pass)
    memo = kopf.Memo(settings=dataclasses.replace(settings(), batch_resync_seconds=3600.0), api=object())
    body = manifest(model={"fromDeployment": {"name": "iris", "track": "stable"}})
    task = asyncio.create_task(
        batch.run_batch(body=body, memo=memo, stopped=_Stopped(), logger=logging.getLogger("test"))  # type: ignore[arg-type]  # the loop reads only bool(stopped) and logger.warning
    )
    state = batch.batch_state(memo)
    for expected_passes, waiting_for in ((1, "iris"), (2, None), (3, None)):
        await asyncio.wait_for(_until(lambda n=expected_passes: len(seen) == n), 5)
        assert state.waiting_for == waiting_for, (
            "a Pending job names the ModelDeployment whose events wake it"
        )
        await asyncio.sleep(0.05)
        assert len(seen) == expected_passes, "no pass without a wake-up within the hour"
        state.wake.set()
    await asyncio.wait_for(task, 5)
    assert len(seen) == 4 and seen[0] is None
    assert [s and s["phase"] for s in seen[1:]] == ["Pending", "Running", "Running"]


async def _until(check: Any) -> None:
    while not check():
        await asyncio.sleep(0.01)
