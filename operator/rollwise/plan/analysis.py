"""Measurements + thresholds -> a verdict, and which queries are due now.

Split from the metric providers the way Argo splits `metricproviders/` from `analysis/`: a
provider only says what Prometheus answered (a value, no data, or an error with detail); this
module alone judges. It is pure: the I/O layer asks `due_queries(md, now)` what to run, runs each
`QueryRequest.promql` through a provider, and hands the answers back to the planner as
`Measured` values in `Observed.measurements`; `record` folds them into the status tallies.

Why the rules are what they are:
- No data never passes. A measurement is inconclusive when a query returns nothing (or NaN) or the
  candidate served fewer than `minSampleCount` requests in the interval; an analysis passes only
  when every metric has `count` conclusive measurements, at least one of them passing.
- A query error (Prometheus down, bad PromQL, circuit open) is a *failed* measurement, never an
  inconclusive one: a rollout must not creep forward while its judge is blind.
- Measurement `k` (0-based) of an analysis is due at `startedAt + (k + 1) * interval`: the first
  one waits a full interval so its PromQL range covers only the step being judged. Each answer
  carries its index and is folded only when it is the next one expected, so handing the same
  answers to the planner twice (a retried pass, a restarted operator) counts them once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from rollwise_contract.features import OutputKind
from rollwise_contract.metrics import (
    FEATURE_REFERENCE,
    FEATURE_VALUE,
    LLM_OUTPUT_TOKENS_PER_SECOND,
    LLM_TIME_PER_OUTPUT_TOKEN,
    LLM_TIME_TO_FIRST_TOKEN,
    PEER_VERSION,
    PREDICTION_VALUE,
    REQUEST_DURATION,
    REQUESTS,
)

from rollwise.api.v1alpha1 import (
    AnalysisSpec,
    AnalysisStatus,
    BuiltinMetric,
    MetricCheck,
    MetricResult,
    ModelDeployment,
    Phase,
    Verdict,
)
from rollwise.plan import segments
from rollwise.plan.compare import (
    CUSTOM_GROUPS,
    DRIFT_GROUPS,
    REGRESSOR_DRIFT_GROUPS,
    SUCCESS_GROUPS,
    judge_custom,
    judge_prediction_drift,
    judge_regressor_drift,
    judge_success_rate,
)
from rollwise.plan.input_drift import INPUT_GROUPS, REFERENCE, judge_input_drift
from rollwise.plan.latency import (
    LATENCY_GROUPS,
    judge_first_token,
    judge_latency,
    judge_time_per_token,
    judge_tokens_per_second,
)
from rollwise.plan.measurement import Counts, Judged, Measurement, NoData, Outcome, QueryError, Value
from rollwise.plan.names import Track
from rollwise.plan.promql import counts_since, selector
from rollwise.plan.quality import QUALITY, SERIES
from rollwise.plan.scope import ScopeError, scoped

# ---------------------------------------------------------------------------------------------
# What the I/O layer is asked to run, and hands back


SAMPLES = None
"""`QueryRequest.metric` of the request-count query behind `minSampleCount`."""


@dataclass(frozen=True)
class QueryRequest:
    """One query the I/O layer must run now and return as `Measured`."""

    metric: str | None
    """The metric's name from spec.rollout.analysis.metrics; None for the sample-count query."""
    index: int
    """Which measurement of the current analysis this is (0-based)."""
    step: int
    """The rollout step the analysis belongs to (status.currentStep)."""
    promql: str
    """The rendered query, ready for `MetricProvider.query`."""
    at: datetime
    """When it was due; evaluate at `now` (the PromQL range ends there)."""
    by: tuple[str, ...] = ()
    """The labels a grouped query's answer is keyed by (`Counts`); empty for one number."""


@dataclass(frozen=True)
class Measured:
    """A provider's answer to one `QueryRequest`."""

    request: QueryRequest
    measurement: Measurement


# ---------------------------------------------------------------------------------------------
# Queries


def window(spec: AnalysisSpec) -> str:
    """The PromQL range of every query: one analysis interval (e.g. `60s`)."""
    return f"{spec.interval_seconds}s"


def fill_template(template: str, md: ModelDeployment, *, track: Track, version: str, win: str) -> str:
    """Fill a custom query's placeholders: {{namespace}}, {{name}}, {{model}}, {{track}},
    {{version}}, {{interval}}; unknown `{{...}}` are left as written (and `render_template` refuses
    them)."""
    values = {
        "namespace": md.metadata.namespace or "",
        "name": md.metadata.name,
        "model": md.spec.model.name,
        "track": str(track),
        "version": version,
        "interval": win,
    }
    out = template
    for key, value in values.items():
        out = out.replace("{{" + key + "}}", value)
    return out


def render_template(template: str, md: ModelDeployment, *, track: Track, version: str, win: str) -> str:
    """The filled template confined to the namespace (`plan/scope.py`); raises `ScopeError` for a
    query it cannot confine, an unknown placeholder among them."""
    filled = fill_template(template, md, track=track, version=version, win=win)
    return scoped(filled, md.metadata.namespace or "default")


def query_problems(md: ModelDeployment) -> list[str]:
    """Custom queries that cannot be confined to the namespace (`plan/scope.py`): the spec is
    refused naming each, rather than a query sent unscoped."""
    spec = md.spec.rollout.analysis
    problems: list[str] = []
    for i, check in enumerate(spec.metrics if spec is not None else []):
        if check.query is None:
            continue
        try:
            metric_query(md, check, spec)  # type: ignore[arg-type]  # spec is set when metrics exist
        except ScopeError as err:
            problems.append(
                f"spec.rollout.analysis.metrics[{i}].query: {err}; every custom query is confined to "
                "its namespace, so write plain PromQL with only the documented {{...}} placeholders"
            )
    return [*problems, *segments.problems(md)]


def metric_query(md: ModelDeployment, check: MetricCheck, spec: AnalysisSpec) -> str:
    """The PromQL of a custom check against the candidate (every built-in is counted)."""
    if check.query is None:
        raise ValueError(f"metric {check.name!r} is a built-in: use counts_query")
    return render_template(
        check.query, md, track=Track.CANDIDATE, version=md.spec.model.version, win=window(spec)
    )


def _regressor(md: ModelDeployment) -> bool:
    schema = md.spec.model.feature_schema
    return schema is not None and schema.output is not None and schema.output.kind is OutputKind.REGRESSOR


@dataclass(frozen=True)
class Counted:
    """A built-in check read as exact counts of both tracks since the analysis started."""

    series: str
    """The counter, e.g. `rollwise_requests_total`."""
    groups: tuple[str, ...]
    """The labels its counts are grouped by (`QueryRequest.by`)."""
    judge: Callable[[MetricCheck, Counts], Judged]
    several: Mapping[str, str] | None = None
    """For a check on several counters (`quality.QUALITY`): each one's `series` label value and
    exported name, read in one query so all are counted at the same instant."""
    mirrored: bool = False
    """The counters are the stable pod's comparison of the shadow's answers (by `peer_version`)."""
    segmented: bool = False
    """Per segment value of the check's segment (`plan/segments.py`)."""


COUNTED = {
    BuiltinMetric.SUCCESS_RATE: Counted(f"{REQUESTS}_total", SUCCESS_GROUPS, judge_success_rate),
    BuiltinMetric.LATENCY_P99: Counted(f"{REQUEST_DURATION}_bucket", LATENCY_GROUPS, judge_latency),
    BuiltinMetric.TIME_TO_FIRST_TOKEN_P95: Counted(
        f"{LLM_TIME_TO_FIRST_TOKEN}_bucket", LATENCY_GROUPS, judge_first_token
    ),
    BuiltinMetric.INTER_TOKEN_LATENCY_P95: Counted(
        f"{LLM_TIME_PER_OUTPUT_TOKEN}_bucket", LATENCY_GROUPS, judge_time_per_token
    ),
    BuiltinMetric.OUTPUT_TOKENS_PER_SECOND: Counted(
        f"{LLM_OUTPUT_TOKENS_PER_SECOND}_bucket", LATENCY_GROUPS, judge_tokens_per_second
    ),
    BuiltinMetric.PREDICTION_DRIFT: Counted(
        f"{PREDICTION_VALUE}_count", DRIFT_GROUPS, judge_prediction_drift
    ),
    BuiltinMetric.INPUT_DRIFT: Counted(f"{FEATURE_VALUE}_bucket", INPUT_GROUPS, judge_input_drift),
}
"""How each built-in is counted: every one reads both tracks' counts since the analysis started."""

COUNTED.update(
    {
        builtin: Counted("", q.groups, q.judge, q.series, mirrored=not q.per_track)
        for builtin, q in QUALITY.items()
    }
)

REGRESSOR_DRIFT = Counted(f"{PREDICTION_VALUE}_bucket", REGRESSOR_DRIFT_GROUPS, judge_regressor_drift)
"""A regressor's predictionDrift: its prediction histogram's bins take the place of classes."""


def counted(md: ModelDeployment, check: MetricCheck) -> Counted | None:
    """How `check` is counted, or None for a custom query (one number, or one per track)."""
    if segments.is_segmented(check):
        return _segmented(check)
    if check.builtin is BuiltinMetric.PREDICTION_DRIFT and _regressor(md):
        return REGRESSOR_DRIFT
    return COUNTED.get(check.builtin) if check.builtin is not None else None


def _segmented(check: MetricCheck) -> Counted | None:
    how = segments.counted_for(check)
    if how is None:
        return None
    judge = segments.judge_parity if check.builtin is BuiltinMetric.PARITY else segments.judge_worst
    return Counted(how.series, how.groups, judge, how.several, mirrored=how.mirrored, segmented=True)


CUSTOM_COMPARED = Counted("", CUSTOM_GROUPS, judge_custom)
"""A query that compares: one answer per track (`comparing_query`)."""


def comparing_query(md: ModelDeployment, check: MetricCheck, spec: AnalysisSpec) -> str:
    """A comparing query's template filled for each track and told apart by a `track` label: one
    query, so both values are read at the same instant."""
    assert check.query is not None
    win = window(spec)
    versions = {Track.CANDIDATE: md.spec.model.version, Track.STABLE: md.status.stable_version or ""}
    parts = [
        f"label_replace(({render_template(check.query, md, track=t, version=v, win=win)}), "
        f'"track", "{t}", "", "")'
        for t, v in versions.items()
    ]
    return " or ".join(parts)


def _counted_by(check: MetricCheck, by: Sequence[str]) -> Counted | None:
    """The judge of a grouped answer: the table entry of the check whose groups the query used."""
    if check.builtin is None:
        return CUSTOM_COMPARED if check.comparison is not None else None
    if segments.is_segmented(check):
        return _segmented(check)
    entries = [COUNTED[check.builtin]] if check.builtin in COUNTED else []
    if check.builtin is BuiltinMetric.PREDICTION_DRIFT:
        entries.append(REGRESSOR_DRIFT)
    if not by:
        return entries[0] if entries else None  # an answer handed over without its query's groups
    return next((c for c in entries if c.groups == tuple(by)), None)


def counts_query(
    md: ModelDeployment, how: Counted, *, since: datetime, at: datetime, check: MetricCheck | None = None
) -> str:
    """Both tracks' counts of `how.series`, exactly, from `since` (the analysis start) to `at`.
    inputDrift's (`check`) watches its `feature` only, and brings the reference's shares too."""
    extra = segments.selector_extra(md, check) if how.segmented and check is not None else ""
    if how.several is not None:
        return _several_counts(md, how, since=since, at=at, extra=extra)
    if extra:
        return counts_since(f"{how.series}{{{selector(md, None, extra)}}}", how.groups, since=since, at=at)
    if check is None or check.builtin is not BuiltinMetric.INPUT_DRIFT:
        return counts_since(f"{how.series}{{{selector(md, None)}}}", how.groups, since=since, at=at)
    extra = "" if check.feature is None else f",feature={json.dumps(check.feature)}"
    live = counts_since(f"{how.series}{{{selector(md, None, extra)}}}", how.groups, since=since, at=at)
    shares = f"{FEATURE_REFERENCE}{{{selector(md, Track.CANDIDATE, extra)}}}"
    reference = f'label_replace(max by (feature, le) ({shares}), "track", "{REFERENCE}", "", "")'

    return f"{live} or {reference}"


def _several_counts(
    md: ModelDeployment, how: Counted, *, since: datetime, at: datetime, extra: str = ""
) -> str:
    """Each counter of a quality check, its `series` label set to its key, joined with `or`.

    Labels count for the track and version that made the prediction, whichever pod exported them
    (a label may reach any replica of either track), so each track is read by its version: a label
    for an earlier candidate's prediction never counts for this one. The shadow's counters are the
    stable pods', of the rows compared with this candidate's version only."""
    assert how.several is not None
    candidate, stable = md.spec.model.version, md.status.stable_version or ""
    if how.mirrored:
        selectors = [selector(md, Track.STABLE, f",{PEER_VERSION}={json.dumps(candidate)}{extra}")]
    else:
        selectors = [
            selector(md, None, f',track="{t}",version={json.dumps(v)}{extra}')
            for t, v in ((Track.CANDIDATE, candidate), (Track.STABLE, stable))
        ]
    by = [g for g in how.groups if g != SERIES]
    parts = [
        f"label_replace({counts_since(f'{name}{{{sel}}}', by, since=since, at=at)}, "
        f'"{SERIES}", "{key}", "", "")'
        for key, name in how.several.items()
        for sel in selectors
    ]
    return " or ".join(parts)


def class_counts_query(md: ModelDeployment, *, since: datetime, at: datetime) -> str:
    """Both tracks' predictions by class since `since`."""
    return counts_query(md, COUNTED[BuiltinMetric.PREDICTION_DRIFT], since=since, at=at)


def success_rate_query(md: ModelDeployment, *, since: datetime, at: datetime) -> str:
    """Both tracks' requests by outcome since `since`."""
    return counts_query(md, COUNTED[BuiltinMetric.SUCCESS_RATE], since=since, at=at)


def samples_query(md: ModelDeployment, spec: AnalysisSpec) -> str:
    """Inference requests the candidate served during the last interval (all outcomes)."""
    sel = selector(md, Track.CANDIDATE)
    return f"sum(increase({REQUESTS}_total{{{sel}}}[{window(spec)}]))"


def taken(analysis: AnalysisStatus) -> int:
    """Looks taken so far, retaken thin ones included (every metric is measured together)."""
    if not analysis.metrics:
        return 0
    return analysis.metrics[0].measurements + analysis.deferred + analysis.baked


def next_due(spec: AnalysisSpec, analysis: AnalysisStatus) -> datetime:
    """When the next measurement is due; see the module docstring for why a full interval first."""
    return analysis.started_at + (taken(analysis) + 1) * timedelta(seconds=spec.interval_seconds)


def requests_for(
    md: ModelDeployment, spec: AnalysisSpec, analysis: AnalysisStatus, *, step: int, at: datetime
) -> list[QueryRequest]:
    """Every query of the next measurement of `analysis`, due or not."""
    index = taken(analysis)
    out: list[QueryRequest] = []
    if spec.min_sample_count > 0:
        out.append(QueryRequest(SAMPLES, index, step, samples_query(md, spec), at))
    for check in spec.metrics:
        try:
            out.append(_request(md, spec, analysis, check, index=index, step=step, at=at))
        except ScopeError:
            continue  # refused by query_problems: the spec goes Invalid, nothing is sent
    return out


def _request(
    md: ModelDeployment,
    spec: AnalysisSpec,
    analysis: AnalysisStatus,
    check: MetricCheck,
    *,
    index: int,
    step: int,
    at: datetime,
) -> QueryRequest:
    """The query of one check; raises `ScopeError` for a custom query that cannot be confined."""
    how = counted(md, check)
    if how is not None:
        promql = counts_query(md, how, since=analysis.started_at, at=at, check=check)
        return QueryRequest(check.name, index, step, promql, at, how.groups)
    if check.query is not None and check.comparison is not None:
        return QueryRequest(
            check.name, index, step, comparing_query(md, check, spec), at, CUSTOM_COMPARED.groups
        )
    return QueryRequest(check.name, index, step, metric_query(md, check, spec), at)


def running_analysis(md: ModelDeployment) -> AnalysisStatus | None:
    """The analysis in progress at the current step, if the status says one runs."""
    status = md.status
    analysis = status.analysis
    if (
        analysis is None
        or analysis.verdict is not Verdict.RUNNING
        or status.current_step is None
        or analysis.step != status.current_step
        or status.phase is not Phase.PROGRESSING
    ):
        return None
    return analysis


def due_queries(md: ModelDeployment, now: datetime) -> list[QueryRequest]:
    """What the I/O layer must query before planning this pass (empty when nothing is due).

    Read from the status the last pass wrote: an analysis step in progress whose next measurement
    time has come. Run every request and pass all answers as `Observed.measurements`.
    """
    spec = md.spec.rollout.analysis
    analysis = running_analysis(md)
    if spec is None or analysis is None or md.status.current_step is None:
        return []
    if now < next_due(spec, analysis):
        return []
    return requests_for(md, spec, analysis, step=md.status.current_step, at=now)


# ---------------------------------------------------------------------------------------------
# Judging


def judge(check: MetricCheck, measurement: Measurement, by: Sequence[str] = ()) -> Judged:
    """One metric's measurement against its rules (the sample gate is applied by `record`); `by`
    is the grouping its query used (`QueryRequest.by`)."""
    how = _counted_by(check, by) if isinstance(measurement, Counts) else None
    match measurement:
        case QueryError(detail=detail):
            return Judged(Outcome.FAIL, None, f"query failed: {detail}")
        case NoData(detail=detail):
            return Judged(Outcome.INCONCLUSIVE, None, f"no data: {detail}")
        case Counts() if how is not None:
            return how.judge(check, measurement)
        case Counts():
            return Judged(
                Outcome.FAIL, None, "query failed: grouped counts answered a check that needs one number"
            )
        case Value(value=v) if math.isnan(v):
            return Judged(Outcome.INCONCLUSIVE, None, "no data: the query returned NaN")
        case Value(value=v):
            if check.threshold.contains(v):
                return Judged(Outcome.PASS, v, "")
            return Judged(Outcome.FAIL, v, f"{v:g} is outside {check.threshold.label()}")


def _gate(spec: AnalysisSpec, samples: Measurement | None) -> Judged | None:
    """The minSampleCount gate: a judgement for every metric when the candidate served too little."""
    match samples:
        case None:
            return None
        case QueryError(detail=detail):
            return Judged(Outcome.FAIL, None, f"request-count query failed: {detail}")
        case Value(value=v) if not math.isnan(v) and v >= spec.min_sample_count:
            return None
        case Value(value=v) if not math.isnan(v):
            return Judged(
                Outcome.INCONCLUSIVE,
                None,
                f"the candidate served {v:.0f} requests in {window(spec)}, fewer than "
                f"minSampleCount {spec.min_sample_count}",
            )
        case _:
            return Judged(
                Outcome.INCONCLUSIVE,
                None,
                f"the candidate served no requests in {window(spec)} "
                f"(minSampleCount {spec.min_sample_count})",
            )


def start(spec: AnalysisSpec, *, step: int | None, now: datetime) -> AnalysisStatus:
    """A fresh analysis: every metric Running with empty tallies."""
    return AnalysisStatus(
        step=step,
        verdict=Verdict.RUNNING,
        started_at=now,
        metrics=[MetricResult(name=m.name, verdict=Verdict.RUNNING) for m in spec.metrics],
    )


def record(
    spec: AnalysisSpec,
    analysis: AnalysisStatus,
    answers: Sequence[Measured],
    *,
    step: int,
    count: int | None,
    bake: timedelta | None = None,
) -> AnalysisStatus:
    """Fold one complete measurement (every query of the next index answered) into the tallies.

    Answers for another step or index, and incomplete sets, change nothing: the I/O layer may
    hand the same answers twice, or only some of them, and nothing is counted twice or half.
    During a `bake` (a look taken before `started_at + bake`) only a failure is tallied; any other
    look is shown in the messages and counted in `baked`, so the verdict waits for the bake's end
    and is then made on everything counted since it began.
    """
    index = taken(analysis)
    mine = {
        a.request.metric: a.measurement
        for a in answers
        if a.request.index == index and a.request.step == step
    }
    grouped = {a.request.metric: a.request.by for a in answers}
    needed = [m.name for m in spec.metrics]
    if any(name not in mine for name in needed):
        return analysis
    if spec.min_sample_count > 0 and SAMPLES not in mine:
        return analysis
    gate = _gate(spec, mine.get(SAMPLES)) if spec.min_sample_count > 0 else None
    judged = {m.name: _gated(judge(m, mine[m.name], grouped.get(m.name, ())), gate) for m in spec.metrics}
    need = spec.count if count is None else count
    failing = any(j.outcome is Outcome.FAIL for j in judged.values())
    looked_at = max(a.request.at for a in answers if a.request.index == index and a.request.step == step)
    if bake is not None and not failing and looked_at < analysis.started_at + bake:
        return _baking(analysis, judged, analysis.started_at + bake - looked_at)
    if gate is not None and gate.outcome is Outcome.INCONCLUSIVE and analysis.deferred < need and not failing:
        # Too few requests yet (a new pod Prometheus has not scraped): look again next interval
        # instead of counting it inconclusive, so no data delays a pass and never pauses the
        # rollout while the next look, on counts since the start, may already show a failure.
        retaken = [
            r.model_copy(update={"message": f"{gate.reason}; looking again", "comparison": None})
            for r in analysis.metrics
        ]
        return analysis.model_copy(update={"metrics": retaken, "deferred": analysis.deferred + 1})
    tallies = [_tally(r, judged[r.name]) for r in analysis.metrics if r.name in judged]
    return conclude(spec, analysis.model_copy(update={"metrics": tallies}), count=count)


def _baking(analysis: AnalysisStatus, judged: dict[str, Judged], left: timedelta) -> AnalysisStatus:
    """A look during a bake that failed nothing: its readings shown, nothing tallied."""
    wait = f"baking, {max(0, math.ceil(left.total_seconds()))}s left"
    shown = [
        r.model_copy(
            update={
                "message": f"{wait}: {judged[r.name].reason}"[:4096] if judged[r.name].reason else wait,
                "last_value": judged[r.name].value if judged[r.name].value is not None else r.last_value,
                "comparison": judged[r.name].comparison or r.comparison,
            }
        )
        for r in analysis.metrics
        if r.name in judged
    ]
    return analysis.model_copy(update={"metrics": shown, "baked": analysis.baked + 1})


def _gated(judged: Judged, gate: Judged | None) -> Judged:
    """A judgement under the minSampleCount gate: too little traffic makes a pass meaningless, but a
    failure stands (a query error, or a candidate shown worse on the counts it did serve)."""
    if gate is None or judged.outcome is Outcome.FAIL:
        return judged
    if gate.outcome is Outcome.FAIL:
        return gate
    return Judged(gate.outcome, judged.value, gate.reason, judged.comparison)


def _tally(result: MetricResult, judged: Judged) -> MetricResult:
    return result.model_copy(
        update={
            "successful": result.successful + (judged.outcome is Outcome.PASS),
            "failed": result.failed + (judged.outcome is Outcome.FAIL),
            "inconclusive": result.inconclusive + (judged.outcome is Outcome.INCONCLUSIVE),
            "last_value": judged.value if judged.value is not None else result.last_value,
            "message": judged.reason[:4096],
            "comparison": judged.comparison or result.comparison,
            "not_worse": judged.outcome is Outcome.PASS and judged.not_worse,
        }
    )


SETTLING = frozenset({BuiltinMetric.SUCCESS_RATE, BuiltinMetric.LATENCY_P99})
"""The checks that can show a candidate *no worse* than stable (a bound on the difference)."""


def settles(spec: AnalysisSpec, name: str) -> bool:
    """Whether metric `name` passes on evidence of "no worse" rather than on `count` looks: with
    maxDurationSeconds set, for a successRate or latencyP99 check that compares."""
    if spec.max_duration_seconds is None:
        return False
    check = next((m for m in spec.metrics if m.name == name), None)
    return check is not None and check.builtin in SETTLING and check.comparison is not None


def _metric_verdict(spec: AnalysisSpec, m: MetricResult, count: int) -> Verdict:
    if m.failed > spec.failure_limit:
        return Verdict.FAILED
    if m.inconclusive > spec.inconclusive_limit:
        return Verdict.INCONCLUSIVE
    if settles(spec, m.name):
        return Verdict.SUCCESSFUL if m.not_worse else Verdict.RUNNING
    if m.successful + m.failed >= count and m.successful > 0:
        return Verdict.SUCCESSFUL
    return Verdict.RUNNING


def out_of_time(spec: AnalysisSpec, analysis: AnalysisStatus) -> bool:
    """maxDurationSeconds has passed: the looks taken span it (pure: no clock, the looks are the
    time, one every intervalSeconds from the start)."""
    limit = spec.max_duration_seconds
    return limit is not None and taken(analysis) * spec.interval_seconds >= limit


def verdict_of(spec: AnalysisSpec, analysis: AnalysisStatus, *, count: int | None) -> tuple[Verdict, str]:
    """The overall verdict and why: Failed if any metric failed past failureLimit, else
    Inconclusive past inconclusiveLimit, else Successful once every metric has `count` conclusive
    measurements with at least one pass, else Running.

    `count` is the step's own count (None: spec.count). Inconclusive measurements do not count
    towards it: they are retaken at the next interval until the limit is passed.
    """
    need = spec.count if count is None else count
    results = list(analysis.metrics)
    if not results:
        return Verdict.RUNNING, "no metrics measured yet"
    failed = [m for m in results if _metric_verdict(spec, m, need) is Verdict.FAILED]
    if failed:
        why = "; ".join(
            f"{m.name}: {m.failed} failed measurement(s), failureLimit {spec.failure_limit}"
            + (f" (last: {m.message})" if m.message else "")
            for m in failed
        )
        return Verdict.FAILED, why
    unsure = [m for m in results if _metric_verdict(spec, m, need) is Verdict.INCONCLUSIVE]
    if unsure:
        why = "; ".join(
            f"{m.name}: {m.inconclusive} inconclusive measurement(s), inconclusiveLimit "
            f"{spec.inconclusive_limit}" + (f" (last: {m.message})" if m.message else "")
            for m in unsure
        )
        return Verdict.INCONCLUSIVE, why
    if all(_metric_verdict(spec, m, need) is Verdict.SUCCESSFUL for m in results):
        if spec.max_duration_seconds is not None:
            return Verdict.SUCCESSFUL, "every metric passed: " + "; ".join(
                f"{m.name}: {m.message}" if settles(spec, m.name) else f"{m.name}: {need} measurement(s)"
                for m in results
            )
        return Verdict.SUCCESSFUL, f"every metric passed {need} measurement(s)"
    if out_of_time(spec, analysis):
        open_ = [m for m in results if _metric_verdict(spec, m, need) is Verdict.RUNNING]
        why = "; ".join(f"{m.name}: {m.message or 'no decision'}" for m in open_)
        return (
            Verdict.INCONCLUSIVE,
            f"no decision within maxDurationSeconds {spec.max_duration_seconds}: {why}",
        )
    return Verdict.RUNNING, f"{results[0].measurements} of {need} measurement(s) taken"


def conclude(spec: AnalysisSpec, analysis: AnalysisStatus, *, count: int | None) -> AnalysisStatus:
    """The analysis with its overall and per-metric verdicts for the step's `count`."""
    need = spec.count if count is None else count
    verdict, _ = verdict_of(spec, analysis, count=need)
    return analysis.model_copy(
        update={
            "verdict": verdict,
            "metrics": [
                m.model_copy(update={"verdict": _metric_verdict(spec, m, need)}) for m in analysis.metrics
            ],
        }
    )
