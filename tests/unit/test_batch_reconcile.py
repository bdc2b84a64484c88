"""`kube/batch.reconcile_batch` against a recorded API: the Job is created once, a foreign Job is
never touched, a steady job writes nothing, an invalid one creates nothing. The kubernetes client
is replaced at the module's own I/O functions; what they are called with is asserted."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
