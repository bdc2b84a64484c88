"""The backtest gate in the rollout state machine, in the simulated world (tests/unit/rollout_world.py).

A candidate shown worse on the labelled history is rolled back with weight 0 on every pass (no
user request ever reaches it); a good one goes on to its first step; a backtest without a verdict
is never a pass; the result stays in status, history and Events.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rollwise.api.v1alpha1 import BacktestPhase, ModelDeployment, Phase, Reason, Verdict
from rollwise.cli.view import status_view
from rollwise.kube import reconcile
from rollwise.kube.observe import observe
from rollwise.plan.backtest import LABEL_BACKTEST, backtest_job_name
from rollwise.plan.batch import pod_failure_policy
from rollwise.plan.decision import Decision
from rollwise.plan.jobs import ObservedPod
from rollwise.plan.names import LABEL_MODEL_DEPLOYMENT
from rollwise.plan.revision import revision_from_spec, revision_of
from rollwise_contract.batch import BacktestReport, ShardReport, ShardState, Tally
from rollwise_contract.features import OutputKind

from tests.unit.cli_objects import line_with, render
from tests.unit.manifests import base
from tests.unit.rollout_world import UID, World, at

SCHEMA = {
    "features": [{"name": n} for n in ("sepal_length", "sepal_width", "petal_length", "petal_width")],
    "output": {"kind": "classifier", "classes": ["setosa", "versicolor", "virginica"]},
}
BACKTEST = {
    "dataset": {"uri": "pvc://history/iris/labelled.parquet"},
    "labelColumn": "species",
    "metrics": [{"name": "accuracy", "worseBy": 1}, {"name": "agreement", "minimum": 80}],
    "shards": 2,
    "timeoutSeconds": 600,
}
WORSE = Tally(
    rows=1000, candidate_correct=850, baseline_correct=900, baseline_only=70, candidate_only=20, agree=910
)
"""Per shard: the candidate 5 points less accurate (2 000 rows over both shards)."""
GOOD = Tally(
    rows=1000, candidate_correct=902, baseline_correct=900, baseline_only=20, candidate_only=22, agree=958
)


def md_of(backtest: dict[str, Any] | None = None) -> ModelDeployment:
    doc = base()
    doc["metadata"]["uid"] = UID
    doc["metadata"]["generation"] = 1
    doc["spec"]["model"]["featureSchema"] = SCHEMA
    doc["spec"]["runtime"] = {"replicas": 4}
    doc["spec"]["rollout"] = {
        "canary": {"steps": [{"setWeight": 10}, {"setWeight": 50}]},
        "backtest": backtest or BACKTEST,
    }
    return ModelDeployment.model_validate(doc)


def started(md: ModelDeployment) -> tuple[World, Decision, str]:
    """Healthy at t=0, then 2.0.0 applied at t=1: the backtest Job is asked for (the first pass's
    decision is returned, with its Events)."""
    w = World.of(md)
    assert w.settle(at(0)).status.phase is Phase.HEALTHY
    w.with_spec(spec__model__version="2.0.0")
    d = w.step(at(1))
    w.settle(at(1))
    name = backtest_job_name("iris", revision_of(revision_from_spec(w.md)))
    return w, d, name


def reports(tally: Tally, shards: int = 2) -> list[str]:
    report = BacktestReport(kind=OutputKind.CLASSIFIER, total=tally)
    return [
        ShardReport(shard=i, shards=shards, status=ShardState.SUCCEEDED, backtest=report).model_dump_json(
            by_alias=True
        )
        for i in range(shards)
    ]


def test_while_the_backtest_runs_the_candidate_is_up_but_gets_no_traffic() -> None:
    w, d, name = started(md_of())
    assert d.status.phase is Phase.PROGRESSING and d.status.current_step is None
    assert d.status.weight == 0
    assert d.status.backtest is not None and d.status.backtest.phase is BacktestPhase.RUNNING
    assert d.status.backtest.job_name == name
    assert ("Job", name) in w.children
    assert [n.reason for n in d.notes if n.reason is Reason.BACKTEST_RUNNING]
    # five minutes on, before timeoutSeconds: still no verdict, still no traffic
    d = w.settle(at(300))
    assert (d.status.weight, d.status.current_step) == (0, None)
    assert w.children[("Service", "iris")]["metadata"]["annotations"]["rollwise.dev/weight"] == "0"


def test_a_candidate_shown_worse_is_rolled_back_before_any_traffic() -> None:
    w, _, name = started(md_of())
    weights = []
    w.finish_job(name, messages=reports(WORSE))
    for t in (2, 3, 4):
        d = w.settle(at(t))
        weights.append(d.status.weight)
    assert weights == [0, 0, 0]
    assert d.status.phase is Phase.ROLLED_BACK
    bt = d.status.backtest
    assert bt is not None and bt.phase is BacktestPhase.FAILED
    assert bt.rows == 2000
    accuracy = bt.metrics[0]
    assert accuracy.verdict is Verdict.FAILED
    assert (accuracy.candidate, accuracy.baseline) == (85.0, 90.0)
    entry = w.md.status.history[-1]
    assert entry.outcome is Reason.ROLLED_BACK
    assert entry.backtest is not None and entry.backtest.startswith(
        "Failed: accuracy 85.00 % vs stable 90.00 %"
    )
    assert "backtest failed: accuracy 85.00 % vs stable 90.00 % over 2000 rows" in entry.message
    assert w.children.get(("Deployment", "iris-candidate"), {}).get("spec", {}).get("replicas") == 0
    assert ("Job", name) in w.children, "the finished Job stays while its candidate does, for its logs"


def test_the_rollback_is_an_event_naming_the_metric_and_the_numbers() -> None:
    w, _, name = started(md_of())
    w.finish_job(name, messages=reports(WORSE))
    d = w.step(at(2))
    warnings = [n for n in d.notes if n.reason is Reason.BACKTEST_FAILED]
    assert warnings and "accuracy 85.00 % vs stable 90.00 %" in warnings[0].message
    assert "upper bound" in warnings[0].message


def test_a_good_candidate_goes_on_to_its_first_step() -> None:
    w, _, name = started(md_of())
    w.finish_job(name, messages=reports(GOOD))
    d = w.step(at(2))
    assert (d.status.phase, d.status.current_step, d.status.weight) == (Phase.PROGRESSING, 0, 10)
    bt = d.status.backtest
    assert bt is not None and bt.phase is BacktestPhase.PASSED
    assert [m.verdict for m in bt.metrics] == [Verdict.SUCCESSFUL, Verdict.SUCCESSFUL]
    d = w.settle(at(3))  # a perfect world walks the steps at once
    assert d.status.phase is Phase.HEALTHY and d.status.stable_version == "2.0.0"
    assert w.md.status.history[-1].backtest is not None
    assert w.md.status.history[-1].backtest.startswith("Passed")
    assert not [k for k in w.children if k[0] == "Job"], "the promoted candidate's Job is pruned"


def test_the_passed_backtest_is_an_event() -> None:
    w, _, name = started(md_of())
    w.finish_job(name, messages=reports(GOOD))
    d = w.step(at(2))
    assert [n for n in d.notes if n.reason is Reason.BACKTEST_PASSED]


@pytest.mark.parametrize(
    ("policy", "phase", "reason"),
    [
        pytest.param(
            "fail", Phase.ROLLED_BACK, Reason.BACKTEST_INCONCLUSIVE, id="fail (the default) rolls back"
        ),
        pytest.param("pause", Phase.PAUSED, Reason.BACKTEST_INCONCLUSIVE, id="pause waits for a human"),
    ],
)
def test_a_failed_backtest_job_is_never_a_pass(policy: str, phase: Phase, reason: Reason) -> None:
    w, _, name = started(md_of({**BACKTEST, "inconclusivePolicy": policy}))
    error = ShardReport(
        shard=0, shards=2, status=ShardState.FAILED, error="input file x.parquet has no column 'species'"
    )
    w.finish_job(name, messages=[error.model_dump_json(by_alias=True)], failed=True)
    d = w.settle(at(2))
    d = w.settle(at(3))
    assert d.status.phase is phase
    assert d.status.weight == 0 and d.status.current_step is None
    bt = d.status.backtest
    assert bt is not None and bt.phase is BacktestPhase.INCONCLUSIVE
    assert bt.message == "the backtest Job failed: shard 0: input file x.parquet has no column 'species'"
    assert reason in {c.reason for c in d.status.conditions}


def test_proceed_goes_on_past_a_backtest_without_a_verdict_with_a_warning() -> None:
    w, _, name = started(md_of({**BACKTEST, "inconclusivePolicy": "proceed", "minRows": 5000}))
    w.finish_job(name, messages=reports(GOOD))
    d = w.step(at(2))
    assert [n for n in d.notes if n.reason is Reason.BACKTEST_INCONCLUSIVE]
    assert (d.status.current_step, d.status.weight) == (0, 10)


def test_a_backtest_past_its_timeout_is_inconclusive_and_rolls_back() -> None:
    w, _, _ = started(md_of())
    d = w.settle(at(1 + 600))
    assert d.status.phase is Phase.ROLLED_BACK
    assert d.status.backtest is not None
    assert d.status.backtest.message == "the backtest did not finish within timeoutSeconds 600"


def test_the_backtest_job_is_a_locked_down_indexed_job_whose_pods_no_service_selects() -> None:
    w, d, name = started(md_of())
    job = (
        next(m for m in d.desired if m["kind"] == "Job")
        if any(m["kind"] == "Job" for m in d.desired)
        else w.children[("Job", name)]
    )
    meta, spec = job["metadata"], job["spec"]
    assert (
        meta["ownerReferences"][0]["uid"] == UID and meta["ownerReferences"][0]["kind"] == "ModelDeployment"
    )
    assert meta["labels"][LABEL_MODEL_DEPLOYMENT] == "iris"
    pod_labels = spec["template"]["metadata"]["labels"]
    assert LABEL_MODEL_DEPLOYMENT not in pod_labels and pod_labels[LABEL_BACKTEST] == "iris"
    assert (spec["completionMode"], spec["completions"]) == ("Indexed", 2)
    assert spec["podFailurePolicy"] == pod_failure_policy()
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    args = pod["containers"][0]["args"]
    flags = dict(zip(args[::2], args[1::2], strict=False))
    assert flags["--label-column"] == "species"
    assert flags["--input"] == "/mnt/pvc/history/iris/labelled.parquet"
    assert flags["--baseline-sha256"] == "a" * 64
    assert json.loads(flags["--feature-schema"])["output"]["kind"] == "classifier"
    mounts = {m["mountPath"]: m.get("readOnly") for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/mnt/pvc/history"] is True


def test_planning_again_while_the_backtest_runs_asks_for_no_change() -> None:
    w, _, _ = started(md_of())
    once = w.step(at(5))
    again = w.step(at(5))
    assert again.status == once.status
    assert not again.notes


def test_kube_reads_our_backtest_job_apart_from_the_track_children() -> None:
    w, _, name = started(md_of())
    foreign = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x", "ownerReferences": []}}
    seen = observe([*w.children.values(), foreign], owner_uid=UID)
    assert {(j.name, j.owned) for j in seen.backtest_jobs} == {(name, True), ("x", False)}
    assert all(c["kind"] != "Job" for c in seen.children)


@pytest.mark.parametrize(
    ("stored", "complete", "lists"),
    [
        pytest.param(BacktestPhase.RUNNING, True, 1, id="the Job ended and the verdict is not in: one LIST"),
        pytest.param(BacktestPhase.RUNNING, False, 0, id="the Job still runs: no LIST"),
        pytest.param(BacktestPhase.PASSED, True, 0, id="the verdict is in the status: no LIST"),
    ],
)
def test_the_backtest_pods_are_listed_only_once_the_job_ended_and_until_the_verdict(
    monkeypatch: pytest.MonkeyPatch, stored: BacktestPhase, complete: bool, lists: int
) -> None:
    w, _, name = started(md_of())
    if complete:
        w.finish_job(name, messages=reports(GOOD))
    assert w.md.status.backtest is not None
    doc = w.md.model_dump(mode="json", by_alias=True)
    doc["status"]["backtest"]["phase"] = str(stored)
    md = ModelDeployment.model_validate(doc)
    calls: list[str] = []

    def fetch_pods(api: object, namespace: str, job: str) -> list[ObservedPod]:
        calls.append(job)
        return list(w.backtest_pods)

    monkeypatch.setattr(reconcile, "fetch_pods", fetch_pods)
    observed = replace(w.observed(), backtest_pods=())
    got = asyncio.run(reconcile._with_backtest_pods(object(), md, observed, owner_uid=UID))
    assert calls == [name] * lists
    assert len(got.backtest_pods) == (2 if lists else 0)


def test_kubectl_rollwise_shows_the_backtest_with_its_numbers() -> None:
    w, _, name = started(md_of())
    w.finish_job(name, messages=reports(WORSE))
    w.settle(at(2))
    out = render(status_view(w.md, [], at(10)), width=200)
    assert f"Backtest: Failed (Job {name}, started 9s ago, 2000 rows (0 rejected))" in out
    row = line_with(out, "Failed       accuracy")
    assert row.split()[:6] == ["accuracy", "85", "90", "-3.461", "-1", "Failed"]


OUTCOMES = {
    "worse": lambda w, name: w.finish_job(name, messages=reports(WORSE)),
    "good": lambda w, name: w.finish_job(name, messages=reports(GOOD)),
    "too few rows": lambda w, name: w.finish_job(name, messages=reports(Tally(rows=10, agree=10), shards=2)),
    "job failed": lambda w, name: w.finish_job(name, messages=["not json"], failed=True),
    "no report": lambda w, name: w.finish_job(name, messages=["", ""]),
    "never ends": lambda w, name: None,
}


@settings(max_examples=60, deadline=None)
@given(
    outcome=st.sampled_from(sorted(OUTCOMES)),
    policy=st.sampled_from(["fail", "pause", "proceed"]),
    times=st.lists(st.integers(min_value=2, max_value=2000), min_size=1, max_size=5).map(sorted),
)
def test_no_traffic_reaches_a_candidate_whose_backtest_did_not_pass(
    outcome: str, policy: str, times: list[int]
) -> None:
    w, _, name = started(md_of({**BACKTEST, "inconclusivePolicy": policy}))
    OUTCOMES[outcome](w, name)
    for t in times:
        d = w.step(at(t))
        bt = d.status.backtest
        assert bt is not None
        passed = bt.phase is BacktestPhase.PASSED or (
            bt.phase is BacktestPhase.INCONCLUSIVE and policy == "proceed"
        )
        if not passed:
            assert d.status.weight == 0, (outcome, policy, t, d.status.phase)
            assert d.status.current_step is None
        if outcome == "worse":
            assert d.status.weight == 0 and bt.phase is BacktestPhase.FAILED
