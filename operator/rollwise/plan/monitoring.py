"""Validation after promotion (`spec.monitoring`): the stable model judged on its own signals while
no rollout runs (#15). Argo Rollouts and Flagger analyse only during a rollout; a model degrades
at rest (its inputs drift, its labels say it got worse), so Rollwise keeps looking.

Pure, like `analysis`: the I/O layer asks `due_queries(md, now)` what to run and hands the answers
back as `Observed.measurements`; `record` folds one look into `status.monitoring`.

Each look counts the stable track's last `windowSeconds` (by default the interval, so looks never
overlap) and judges every check on its threshold alone with the built-ins' own guard rails
(outside only when shown so at 99 %), since there is no second track. Client errors are the
callers' and are left out of successRate. A look fails when any check fails; the model is
degraded after `failureLimit + 1` failing looks in a row and healthy again after a look with no
failure. Error rate: on non-overlapping windows a model exactly at its thresholds fails a look
with probability at most 0.01 per check, so with m checks and the default failureLimit 1 a healthy
model is flagged by two looks in a row with probability at most (0.01 m)^2 per pair of looks
(`tests/unit/test_monitoring.py` simulates it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta

from rollwise_contract.metrics import FEATURE_REFERENCE, FEATURE_VALUE, PREDICTION_REFERENCE, PREDICTION_VALUE

from rollwise.api.v1alpha1 import (
    BuiltinMetric,
    MetricCheck,
    MetricResult,
    ModelDeployment,
    Monitoring,
    MonitoringStatus,
    Verdict,
)
from rollwise.plan import analysis, segments
from rollwise.plan.analysis import Measured, QueryRequest, counted, render_template
from rollwise.plan.compare import DEFAULT_CONFIDENCE, psi_of
from rollwise.plan.input_drift import REFERENCE
from rollwise.plan.measurement import Counts, Judged, Outcome
from rollwise.plan.names import Track
from rollwise.plan.promql import counts_since, selector
from rollwise.plan.quality import SERIES
from rollwise.plan.scope import ScopeError
from rollwise.plan.stats import fixed_shares_evidence

STEP = -1
"""`QueryRequest.step` of a monitoring look: never a rollout step, so answers never mix."""

_VERDICT = {
    Outcome.PASS: Verdict.SUCCESSFUL,
    Outcome.FAIL: Verdict.FAILED,
    Outcome.INCONCLUSIVE: Verdict.INCONCLUSIVE,
}


def begin(revision: str, now: datetime, spec: Monitoring) -> MonitoringStatus:
    """Watching a new stable revision: every check waiting for its first look."""
    return MonitoringStatus(
        revision=revision,
        started_at=now,
        metrics=[MetricResult(name=m.name, verdict=Verdict.RUNNING) for m in spec.metrics],
    )


def next_due(spec: Monitoring, status: MonitoringStatus) -> datetime:
    return (status.last_look_at or status.started_at) + timedelta(seconds=spec.interval_seconds)


def due_queries(md: ModelDeployment, now: datetime) -> list[QueryRequest]:
    """The next look's queries once it is due, for the stable revision the status watches."""
    spec, status = md.spec.monitoring, md.status.monitoring
    if spec is None or status is None or status.revision != md.status.stable_revision:
        return []
    if now < next_due(spec, status):
        return []
    return requests_for(md, spec, status, at=now)


def requests_for(
    md: ModelDeployment, spec: Monitoring, status: MonitoringStatus, *, at: datetime
) -> list[QueryRequest]:
    out = []
    for check in spec.metrics:
        try:
            promql, by = _query(
                md, check, since=at - timedelta(seconds=spec.window), at=at, window=spec.window
            )
        except ScopeError:
            continue  # refused by analysis.query_problems: the spec is Invalid
        out.append(QueryRequest(check.name, status.looks, STEP, promql, at, by))
    return out


def _query(
    md: ModelDeployment, check: MetricCheck, *, since: datetime, at: datetime, window: int
) -> tuple[str, tuple[str, ...]]:
    """The stable track's counts over the window, its `track` label renamed `candidate` so the
    built-in judges read it as the side being judged (with no stable to compare with)."""
    version = md.status.stable_version or md.spec.model.version
    if check.query is not None:
        return render_template(check.query, md, track=Track.STABLE, version=version, win=f"{window}s"), ()
    how = counted(md, check)
    assert how is not None  # every monitored built-in is counted
    own = f",version={json.dumps(version)}"
    if how.segmented:
        own += segments.selector_extra(md, check)
    if how.several is not None:
        sel = selector(md, Track.STABLE, own)
        by = [g for g in how.groups if g != SERIES]
        parts = [
            (key, counts_since(f"{name}{{{sel}}}", by, since=since, at=at))
            for key, name in how.several.items()
        ]
        q = " or ".join(f'label_replace({c}, "{SERIES}", "{key}", "", "")' for key, c in parts)
    elif check.builtin is BuiltinMetric.PREDICTION_DRIFT:
        sel = selector(md, Track.STABLE, own)
        live = counts_since(f"{PREDICTION_VALUE}_count{{{sel}}}", ("track", "class"), since=since, at=at)
        shares = (
            f'label_replace(max by (class) ({PREDICTION_REFERENCE}{{{sel}}}), "track", "{REFERENCE}", "", "")'
        )
        q = f"{live} or {shares}"
        return f'label_replace({q}, "track", "{Track.CANDIDATE}", "track", "{Track.STABLE}")', (
            "track",
            "class",
        )
    elif check.builtin is BuiltinMetric.INPUT_DRIFT:
        extra = own + ("" if check.feature is None else f",feature={json.dumps(check.feature)}")
        live = counts_since(
            f"{FEATURE_VALUE}_bucket{{{selector(md, Track.STABLE, extra)}}}", how.groups, since=since, at=at
        )
        shares = f"{FEATURE_REFERENCE}{{{selector(md, Track.STABLE, extra)}}}"
        q = f'{live} or label_replace(max by (feature, le) ({shares}), "track", "{REFERENCE}", "", "")'
    else:
        if check.builtin is BuiltinMetric.SUCCESS_RATE:
            own += ',outcome!="client_error"'  # the callers' errors, not the model's
        q = counts_since(f"{how.series}{{{selector(md, Track.STABLE, own)}}}", how.groups, since=since, at=at)
    return f'label_replace({q}, "track", "{Track.CANDIDATE}", "track", "{Track.STABLE}")', how.groups


def record(spec: Monitoring, status: MonitoringStatus, answers: Sequence[Measured]) -> MonitoringStatus:
    """Fold one complete look (every check answered for the next index) into the status; anything
    else (another index, a partial set, the same answers again) changes nothing."""
    mine = {
        a.request.metric: a for a in answers if a.request.step == STEP and a.request.index == status.looks
    }
    if any(m.name not in mine for m in spec.metrics):
        return status
    judged = {m.name: _judge(m, mine[m.name]) for m in spec.metrics}
    at = max(a.request.at for a in mine.values())
    failed = [n for n, j in judged.items() if j.outcome is Outcome.FAIL]
    passed = any(j.outcome is Outcome.PASS for j in judged.values())
    failing = status.failing + 1 if failed else (0 if passed else status.failing)
    healthy = status.healthy
    if failing > spec.failure_limit:
        healthy = False
    elif failing == 0 and passed:
        healthy = True
    shown = failed or list(judged)
    message = "; ".join(f"{n}: {judged[n].reason or _value(judged[n])}" for n in shown)
    return status.model_copy(
        update={
            "looks": status.looks + 1,
            "failing": failing,
            "healthy": healthy,
            "last_look_at": at,
            "message": message[:4096],
            "metrics": [_result(_kept(status, m.name), judged[m.name]) for m in spec.metrics],
        }
    )


def _judge(check: MetricCheck, answer: Measured) -> Judged:
    """A check on the stable alone: the built-in judges, but predictionDrift against the reference."""
    if check.builtin is BuiltinMetric.PREDICTION_DRIFT and isinstance(answer.measurement, Counts):
        return judge_predictions_against_reference(check, answer.measurement)
    return analysis.judge(check, answer.measurement, answer.request.by)


def judge_predictions_against_reference(check: MetricCheck, counts: Counts) -> Judged:
    """The stable's predicted class shares in the window against the reference's (`candidate` is
    the stable, renamed): the PSI against `threshold`, failed only when the shares are also shown to
    differ (`stats.fixed_shares_evidence`, exact at every sample size, at 99 %)."""
    reference = {k[1]: v for k, v in counts.values.items() if k[0] == REFERENCE}
    if not reference:
        return Judged(
            Outcome.INCONCLUSIVE,
            None,
            "no data: no reference class shares (rollwise_prediction_reference_share); predictionDrift "
            "after promotion needs a classifier's spec.model.reference",
        )
    live = {k[1]: v for k, v in counts.values.items() if k[0] == str(Track.CANDIDATE)}
    classes = sorted(set(reference) | set(live))
    observed = [live.get(c, 0.0) for c in classes]
    n = sum(observed)
    if n <= 0:
        return Judged(Outcome.INCONCLUSIVE, None, "no data: the stable made no predictions in the window")
    base = [reference.get(c, 0.0) for c in classes]
    total = sum(base) or 1.0
    psi, moved = psi_of([x / n for x in observed], [b / total for b in base])
    evidence = fixed_shares_evidence(observed, [b / total for b in base])
    outside = not check.threshold.contains(psi)
    shown = evidence >= 1 / (1 - DEFAULT_CONFIDENCE)
    verdict = "drifted" if outside and shown else ("within threshold" if not outside else "not shown")
    line = (
        f"class shares PSI {psi:.3g} vs reference (most moved: {classes[moved]} "
        f"{100 * observed[moved] / n:.1f} % vs {100 * base[moved] / total:.1f} %; likelihood ratio "
        f"{evidence:.3g}; {n:.0f} predictions): {verdict}"
    )
    return Judged(Outcome.FAIL if outside and shown else Outcome.PASS, psi, line)


def _kept(status: MonitoringStatus, name: str) -> MetricResult:
    """The check's tally so far; a check added to the spec since starts from zero."""
    return next(
        (r for r in status.metrics if r.name == name), MetricResult(name=name, verdict=Verdict.RUNNING)
    )


def _value(j: Judged) -> str:
    return "passed" if j.value is None else f"{j.value:.4g}"


def _result(r: MetricResult, j: Judged) -> MetricResult:
    return r.model_copy(
        update={
            "verdict": _VERDICT[j.outcome],
            "successful": r.successful + (j.outcome is Outcome.PASS),
            "failed": r.failed + (j.outcome is Outcome.FAIL),
            "inconclusive": r.inconclusive + (j.outcome is Outcome.INCONCLUSIVE),
            "last_value": j.value if j.value is not None else r.last_value,
            "message": j.reason[:4096],
            "comparison": j.comparison,
        }
    )


def summary(status: MonitoringStatus) -> str:
    """The `ModelHealthy` condition's message."""
    if status.healthy is None:
        return f"watching {status.looks} look(s); no verdict yet" + (
            f": {status.message}" if status.message else ""
        )
    state = "healthy" if status.healthy else f"degraded ({status.failing} failing look(s) in a row)"
    return f"{state}: {status.message}"[:32768]
