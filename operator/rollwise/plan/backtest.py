"""The backtest gate: the candidate and the stable score one labelled dataset before any traffic.

Pure, like the rest of `plan/`. Three parts:
- the Job (`desired_backtest_job`): an Indexed Job of `rollwise-batch --label-column` shards, built
  by `plan/batch.py`'s `indexed_job` (same pod lockdown and `podFailurePolicy` as a ModelBatchJob),
  owned by the ModelDeployment and named after the candidate's revision, so a new revision gets a
  new Job and a rerun of the same revision finds its own;
- the judge (`judge`): the shards' tallies (`rollwise_contract.batch.BacktestReport`), added up,
  against each metric's tolerance, with the error rates below;
- the status (`backtest_status`): rebuilt from the Job and its pods on every pass.

Why one fixed-sample test and not live checks' confidence sequence: a backtest looks once, at the
end, at a dataset whose size is known, so a plain one-sided test at level `1 - confidence` is
exact in its guarantee and tighter than a time-uniform bound.

Error rates, each metric on its own (a backtest of k metrics fails a candidate that meets every
tolerance in at most k (1 - confidence) of backtests; tests/unit/test_backtest.py simulates them):
- accuracy, paired: d_i = 1[candidate right] - 1[stable right] per row, so mean(d) = acc_c - acc_s
  and var(d) = (b + c)/n - mean(d)^2 from McNemar's discordant pairs b (stable right only) and c
  (candidate right only). Fails when the one-sided upper bound mean(d) + z_(1-alpha) sd(d)/sqrt(n)
  is below -worseBy: a candidate worse by at most worseBy fails with probability <= alpha (at the
  boundary, by the central limit theorem; less inside it). Pairing is what makes a backtest
  sharp: two models agreeing on 90 % of rows differ only by the 10 % they disagree on. The
  variance is never taken below one discordant pair's (1/n), so two identical models (b = c = 0)
  are not read as exactly equal from few rows.
- mae / rmse (regressors), paired the same way on d_i = |e_c| - |e_s| (mae) or e_c^2 - e_s^2 (mse):
  fails when the lower bound of mean(d) exceeds worseBy (mae), or exceeds (rmse_s + worseBy)^2 -
  rmse_s^2 (rmse, the stable's rmse plugged in).
- agreement: fails when the share of rows where both predict the same label is shown below
  `minimum` by the guard rail's exact likelihood-ratio test (`stats.excess_evidence`, valid at any
  n): a model pair agreeing on at least `minimum` fails with probability <= alpha.
- bySegment (segment parity): the whole dataset and each segment value with at least `minRows`
  rows are judged by the metric's rule at alpha / (m + 1), m the segment values judged
  (Bonferroni), so together they fail a candidate meeting the tolerance everywhere with
  probability <= alpha.
- no verdict is ever a pass: fewer than `minRows` labelled rows, a failed or timed-out Job, a
  metric that does not fit the model's kind, or segments lost from the report are inconclusive,
  and `inconclusivePolicy` (default fail: roll back) decides.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import NormalDist

from rollwise_contract.batch import BacktestReport, ShardReport, Tally
from rollwise_contract.features import OutputKind

from rollwise.api.v1alpha1 import (
    API_VERSION,
    KIND,
    Backtest,
    BacktestMetric,
    BacktestMetricName,
    BacktestPhase,
    BacktestResult,
    BacktestStatus,
    ModelDeployment,
    ModelSpec,
    Verdict,
)
from rollwise.plan.batch import TERMINATION_LOG, ShardJob, claim_of, indexed_job, missing_pins, shard_volumes
from rollwise.plan.decision import ChildRef
from rollwise.plan.desired import container_path, container_uri, feature_schema_arg
from rollwise.plan.jobs import ObservedJob, ObservedPod, PodPhase, shard_report
from rollwise.plan.manifest import JsonValue, Manifest
from rollwise.plan.names import LABEL_MANAGED_BY, LABEL_NAME, MANAGED_BY, common_labels
from rollwise.plan.state import State, World, candidate_exists
from rollwise.plan.stats import excess_evidence

LABEL_BACKTEST = "rollwise.dev/backtest-of"
"""The ModelDeployment a backtest Job and its pods belong to. Not `rollwise.dev/model-deployment`:
the `replicas` router's Service selects every pod carrying that label, and a backtest pod must
never receive a request."""
BACKTEST_RETRIES = 2
"""Retries of a shard after a failure a retry may fix (a failed download, a killed pod)."""
OUTPUT_DIR = "/tmp/backtest"
"""Where the shards keep their done markers: their own scratch volume (the tallies travel in the
termination message, and a rerun of the revision is a new Job)."""


# ---- the Job ------------------------------------------------------------------------------------


def backtest_job_name(md_name: str, revision: str) -> str:
    """`iris` + revision `0123456789` -> `iris-backtest-01234567`: at most 58 characters, so an
    Indexed Job's pod hostname `<job>-<index>` stays within 63."""
    return f"{md_name[:40].rstrip('-')}-backtest-{revision[:8]}"


def backtest_labels(md_name: str) -> dict[str, JsonValue]:
    """The Job's: the ModelDeployment's children labels (its index finds the Job by them) and
    `LABEL_BACKTEST`."""
    return {**common_labels(md_name), LABEL_BACKTEST: md_name}


def backtest_pod_labels(md_name: str) -> dict[str, JsonValue]:
    """The pods': `LABEL_BACKTEST` only of ours, never the serving selector's label."""
    return {LABEL_NAME: "rollwise-backtest", LABEL_MANAGED_BY: MANAGED_BY, LABEL_BACKTEST: md_name}


def pinned_problem(which: str, model: ModelSpec) -> str | None:
    """Why `model` cannot be backtested (no pinned artifact or schema), or None."""
    missing = missing_pins(model)
    if not missing:
        return None
    return f"the {which} model has no {', '.join(missing)}; a backtest scores pinned artifacts with schemas"


def backtest_args(spec: Backtest, candidate: ModelSpec, stable: ModelSpec) -> list[JsonValue]:
    """`rollwise-batch` in backtest mode (its parser: `rollwise_serving.batch.parse_batch_settings`)."""
    uri, fmt = candidate.artifact
    base_uri, base_fmt = stable.artifact
    assert candidate.sha256 and candidate.feature_schema and stable.sha256 and stable.feature_schema
    data = spec.dataset.uri
    args: list[JsonValue] = [
        *("--model-uri", container_uri(uri), "--format", str(fmt), "--sha256", candidate.sha256),
        *("--feature-schema", feature_schema_arg(candidate.feature_schema)),
        *("--baseline-model-uri", container_uri(base_uri), "--baseline-format", str(base_fmt)),
        *("--baseline-sha256", stable.sha256),
        *("--baseline-feature-schema", feature_schema_arg(stable.feature_schema)),
        *("--label-column", spec.label_column),
        "--input",
        container_path(data) if claim_of(data) or data.startswith("file://") else data,
    ]
    if spec.dataset.format is not None:
        args += ["--input-format", str(spec.dataset.format)]
    args += ["--output", OUTPUT_DIR, "--shard-count", str(spec.shards), "--termination-log", TERMINATION_LOG]
    return args


def desired_backtest_job(
    md: ModelDeployment, spec: Backtest, *, revision: str, stable: ModelSpec, owner_uid: str, batch_image: str
) -> Manifest:
    """The candidate's backtest Job, owned by the ModelDeployment (deleted with it)."""
    candidate = md.spec.model
    volumes, mounts = shard_volumes(spec.resources, [candidate.uri or "", stable.uri or "", spec.dataset.uri])
    owner: Manifest = {"apiVersion": API_VERSION, "kind": KIND, "name": md.metadata.name, "uid": owner_uid}
    return indexed_job(
        ShardJob(
            name=backtest_job_name(md.metadata.name, revision),
            namespace=md.metadata.namespace,
            labels=backtest_labels(md.metadata.name),
            pod_labels=backtest_pod_labels(md.metadata.name),
            owner=owner,
            image=spec.image or batch_image,
            args=backtest_args(spec, candidate, stable),
            env=[e.model_dump(mode="json", exclude_none=True) for e in spec.env],
            resources=spec.resources,
            volumes=volumes,
            mounts=mounts,
            shards=spec.shards,
            parallelism=spec.shards,
            backoff_limit_per_index=BACKTEST_RETRIES,
        )
    )


# ---- the judge ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    result: BacktestResult


def _z(alpha: float) -> float:
    return NormalDist().inv_cdf(1 - alpha)


def _paired_bound(
    total: float, squares: float, n: int, alpha: float, *, upper: bool, floor: float = 0.0
) -> tuple[float, float]:
    """(mean, one-sided 1 - alpha bound) of per-row differences from their sum and sum of squares,
    the variance at least `floor`."""
    mean = total / n
    variance = max(squares / n - mean * mean, floor)
    radius = _z(alpha) * math.sqrt(variance / n)
    return mean, mean + radius if upper else mean - radius


def judge_accuracy(t: Tally, worse_by: float, alpha: float) -> tuple[Verdict, float, float, float]:
    """(verdict, candidate %, stable %, upper bound of the difference in points): Failed when the
    upper bound of acc_candidate - acc_stable lies below -worseBy.

    Example: 2 000 rows, candidate right on 1 700, stable on 1 800, b = 140, c = 40: difference
    -5.0 points, sd of d sqrt(0.09 - 0.0025) = 0.296, upper bound -5.0 + 2.326 * 0.296 / sqrt(2000)
    * 100 = -3.46 points < -1: Failed."""
    n = t.rows
    discordant = t.candidate_only + t.baseline_only
    # at least one discordant pair's variance: identical answers on few rows are not exact equality
    _, bound = _paired_bound(
        t.candidate_only - t.baseline_only, discordant, n, alpha, upper=True, floor=1 / n
    )
    verdict = Verdict.FAILED if bound * 100 < -worse_by else Verdict.SUCCESSFUL
    return verdict, 100 * t.candidate_correct / n, 100 * t.baseline_correct / n, bound * 100


def judge_error(
    t: Tally, name: BacktestMetricName, worse_by: float, alpha: float
) -> tuple[Verdict, float, float, float, float]:
    """(verdict, candidate, stable, lower bound, tolerance) for mae or rmse: Failed when the lower
    bound of the paired difference exceeds the tolerance (rmse: on the squared errors)."""
    n = t.rows
    if name is BacktestMetricName.MAE:
        c, s = t.candidate_abs_error / n, t.baseline_abs_error / n
        _, bound = _paired_bound(
            t.candidate_abs_error - t.baseline_abs_error, t.abs_diff_sq, n, alpha, upper=False
        )
        return (Verdict.FAILED if bound > worse_by else Verdict.SUCCESSFUL), c, s, bound, worse_by
    c, s = math.sqrt(t.candidate_sq_error / n), math.sqrt(t.baseline_sq_error / n)
    limit = (s + worse_by) ** 2 - s * s
    _, bound = _paired_bound(t.candidate_sq_error - t.baseline_sq_error, t.sq_diff_sq, n, alpha, upper=False)
    return (Verdict.FAILED if bound > limit else Verdict.SUCCESSFUL), c, s, bound, limit


def judge_agreement(t: Tally, minimum: float, alpha: float) -> tuple[Verdict, float]:
    """(verdict, agreement %): Failed when the disagreement rate is shown above 1 - minimum by
    `stats.excess_evidence` at 1/alpha (exact at any row count)."""
    share = 100 * t.agree / t.rows
    evidence = excess_evidence(t.rows - t.agree, t.rows, 1 - minimum / 100)
    return (Verdict.FAILED if share < minimum and evidence >= 1 / alpha else Verdict.SUCCESSFUL), share


def _fits(metric: BacktestMetric, kind: OutputKind) -> bool:
    classifier = metric.name in (BacktestMetricName.ACCURACY, BacktestMetricName.AGREEMENT)
    return classifier == (kind is OutputKind.CLASSIFIER)


def _one(metric: BacktestMetric, t: Tally, alpha: float, segment: str | None) -> Judgement:
    where = f" in {segment}" if segment else ""
    name = metric.name

    def judged(verdict: Verdict, message: str, **numbers: float | None) -> Judgement:
        result = BacktestResult(name=name, verdict=verdict, segment=segment, message=message, **numbers)
        return Judgement(verdict, result)

    if name is BacktestMetricName.ACCURACY:
        verdict, c, s, bound = judge_accuracy(t, metric.tolerance, alpha)
        shown = "shown worse" if verdict is Verdict.FAILED else "not shown worse"
        message = (
            f"accuracy{where} {c:.2f} % vs stable {s:.2f} % over {t.rows} rows ({c - s:+.2f} points, "
            f"upper bound {bound:+.2f}): {shown} than by {metric.tolerance:g} points"
        )
        return judged(verdict, message, candidate=c, baseline=s, bound=bound, tolerance=-metric.tolerance)
    if name is BacktestMetricName.AGREEMENT:
        assert metric.minimum is not None
        verdict, share = judge_agreement(t, metric.minimum, alpha)
        shown = "shown below" if verdict is Verdict.FAILED else "not shown below"
        message = f"agreement{where} {share:.2f} % over {t.rows} rows: {shown} {metric.minimum:g} %"
        return judged(verdict, message, candidate=share, tolerance=metric.minimum)
    verdict, c, s, bound, limit = judge_error(t, name, metric.tolerance, alpha)
    shown = "shown worse" if verdict is Verdict.FAILED else "not shown worse"
    message = (
        f"{name}{where} {c:.4g} vs stable {s:.4g} over {t.rows} rows: {shown} than by {metric.tolerance:g}"
    )
    return judged(verdict, message, candidate=c, baseline=s, bound=bound, tolerance=limit)


def _inconclusive(metric: BacktestMetric, message: str) -> Judgement:
    return Judgement(
        Verdict.INCONCLUSIVE,
        BacktestResult(name=metric.name, verdict=Verdict.INCONCLUSIVE, message=message[:1024]),
    )


def judge_metric(spec: Backtest, metric: BacktestMetric, report: BacktestReport) -> Judgement:
    """One metric's verdict on the summed report; bySegment adds each segment value at alpha / m
    and reports the first failing one (else the overall result)."""
    alpha = 1 - spec.confidence
    if not _fits(metric, report.kind):
        return _inconclusive(metric, f"{metric.name} does not apply to a {report.kind} model")
    if report.total.rows < spec.min_rows:
        return _inconclusive(
            metric,
            f"{report.total.rows} labelled rows scored by both models, fewer than minRows {spec.min_rows}",
        )
    if not metric.by_segment:
        return _one(metric, report.total, alpha, None)
    if report.segments_dropped:
        return _inconclusive(
            metric, "the shards' segment tallies did not fit their reports; parity not judged"
        )
    judged = [
        (f"{feature}={value}", tally)
        for feature, values in sorted(report.segments.items())
        for value, tally in sorted(values.items())
        if tally.rows >= spec.min_rows
    ]
    if not judged and not report.segments:
        return _inconclusive(metric, "bySegment: the candidate's feature schema declares no segments")
    # the whole dataset and each segment value: m + 1 comparisons, each at alpha / (m + 1)
    share = alpha / (len(judged) + 1)
    overall = _one(metric, report.total, share, None)
    if overall.verdict is Verdict.FAILED:
        return overall
    for segment, tally in judged:
        one = _one(metric, tally, share, segment)
        if one.verdict is Verdict.FAILED:
            return one
    note = f"; and {len(judged)} segment values, each judged at confidence {1 - share:.4g}: none worse"
    return Judgement(
        overall.verdict, overall.result.model_copy(update={"message": (overall.result.message + note)[:1024]})
    )


def judge(spec: Backtest, report: BacktestReport) -> tuple[BacktestPhase, list[BacktestResult], str]:
    """All metrics: Failed if any is shown worse, else Inconclusive if any has no verdict, else Passed."""
    judged = [judge_metric(spec, m, report) for m in spec.metrics]
    results = [j.result for j in judged]
    failed = [r for r in results if r.verdict is Verdict.FAILED]
    if failed:
        return BacktestPhase.FAILED, results, "; ".join(r.message for r in failed)
    open_ = [r for r in results if r.verdict is Verdict.INCONCLUSIVE]
    if open_:
        return BacktestPhase.INCONCLUSIVE, results, "; ".join(r.message for r in open_)
    return BacktestPhase.PASSED, results, "; ".join(r.message for r in results)


# ---- the status ---------------------------------------------------------------------------------


def started(md: ModelDeployment, revision: str, now: datetime) -> BacktestStatus:
    return BacktestStatus(
        revision=revision,
        phase=BacktestPhase.RUNNING,
        job_name=backtest_job_name(md.metadata.name, revision),
        started_at=now,
        message="scoring the labelled dataset with the candidate and the stable",
    )


def _reports(pods: Sequence[ObservedPod], shards: int) -> list[ShardReport] | None:
    """Each shard's report from its succeeded pod; None while any is missing."""
    out = []
    for index in range(shards):
        done = sorted(
            (p for p in pods if p.index == index and p.phase is PodPhase.SUCCEEDED), key=lambda p: p.created
        )
        report = shard_report(done[-1].message) if done else None
        if report is None or report.backtest is None:
            return None
        out.append(report)
    return out


def _failure(job: ObservedJob, pods: Sequence[ObservedPod]) -> str:
    failed = sorted((p for p in pods if p.phase is PodPhase.FAILED), key=lambda p: p.created)
    for pod in reversed(failed):
        report = shard_report(pod.message)
        if report is not None and report.error:
            return f"shard {pod.index}: {report.error}"
    return job.failure_message or "the Job failed"


def backtest_status(
    spec: Backtest,
    current: BacktestStatus,
    *,
    job: ObservedJob | None,
    pods: Sequence[ObservedPod],
    now: datetime,
) -> BacktestStatus:
    """The next status of a running backtest from its Job (None: not created yet) and the Job's
    pods: Running, or its verdict once every shard reported, Inconclusive when the Job failed or
    `timeoutSeconds` passed. A finished one is kept as is."""
    if current.phase is not BacktestPhase.RUNNING:
        return current
    ended = {"finished_at": now}
    if job is not None and job.owned and job.complete:
        reports = _reports(pods, spec.shards)
        if reports is None:
            if now < current.started_at + timedelta(seconds=spec.timeout_seconds):
                return current  # the pods' termination messages are on their way
            return current.model_copy(
                update={
                    **ended,
                    "phase": BacktestPhase.INCONCLUSIVE,
                    "message": "the Job completed without every shard's tallies",
                }
            )
        summed = reports[0].backtest
        assert summed is not None
        for r in reports[1:]:
            assert r.backtest is not None
            summed = summed + r.backtest
        phase, results, message = judge(spec, summed)
        return current.model_copy(
            update={
                **ended,
                "phase": phase,
                "metrics": results,
                "rows": summed.total.rows,
                "rows_rejected": summed.rows_rejected,
                "rows_unlabelled": summed.rows_unlabelled,
                "message": message[:4096],
            }
        )
    if job is not None and not job.owned:
        why = f"Job {job.name} exists and is not owned by this ModelDeployment; delete or rename it"
        return current.model_copy(update={**ended, "phase": BacktestPhase.INCONCLUSIVE, "message": why})
    if job is not None and job.failed:
        why = f"the backtest Job failed: {_failure(job, pods)}"
        return current.model_copy(
            update={**ended, "phase": BacktestPhase.INCONCLUSIVE, "message": why[:4096]}
        )
    if now >= current.started_at + timedelta(seconds=spec.timeout_seconds):
        why = f"the backtest did not finish within timeoutSeconds {spec.timeout_seconds}"
        return current.model_copy(update={**ended, "phase": BacktestPhase.INCONCLUSIVE, "message": why})
    return current


def backtest_objects(
    world: World, state: State, *, owner_uid: str, batch_image: str
) -> tuple[list[Manifest], list[ChildRef]]:
    """The backtest Job while it runs (created once: its template is immutable), and the Jobs to
    prune: another revision's, or any once no candidate is left. A finished Job stays while its
    candidate does (rolled back included), so its pods' logs can be read."""
    spec, bt = world.md.spec.rollout.backtest, state.backtest
    current = (
        bt.job_name if bt is not None and candidate_exists(state) and bt.revision == state.candidate else None
    )
    desired: list[Manifest] = []
    if spec is not None and bt is not None and current is not None and bt.phase is BacktestPhase.RUNNING:
        desired.append(
            desired_backtest_job(
                world.md,
                spec,
                revision=bt.revision,
                stable=state.stable.model,
                owner_uid=owner_uid,
                batch_image=batch_image,
            )
        )
    stale = [
        ChildRef("batch/v1", "Job", j.name)
        for j in world.observed.backtest_jobs
        if j.owned and j.name != current
    ]
    return desired, stale


def history_line(status: BacktestStatus | None) -> str | None:
    """The backtest's outcome for a history entry."""
    if status is None:
        return None
    return f"{status.phase}: {status.message}"[:1024]
