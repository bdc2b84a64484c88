"""Checks per segment (#15): `bySegment: worst` and the `parity` audit.

A model can be as good as stable on all traffic and broken for one customer segment. The server
exports outcomes, predictions and labelled quality per value of each declared segment feature
(`featureSchema.segments`, `rollwise_segment_*`), and:
- `bySegment: worst` judges every segment value with the check's own rules (the candidate's
  segment against stable's same segment), at a confidence raised for the number of values
  (Bonferroni: `1 - (1 - confidence) / K`), so a candidate no worse in any segment is failed in at
  most `1 - confidence` of rollouts however many segments there are. It fails when any segment
  fails, naming it; it passes when no segment fails and at least one passed (segments too thin to
  judge are listed, and do not hold the rollout).
- `parity` measures the gap between the segment values with the highest and the lowest rate
  (positive rate of a class, or accuracy). Each value's rate has a confidence sequence, all of
  them at once (Bonferroni over both tracks' values); the candidate's gap is at least
  `max(lower) - min(upper)` and stable's at most `max(upper) - min(lower)`. It fails when the
  candidate's smallest possible gap exceeds `threshold.max`, or exceeds stable's largest by more
  than `worseBy`: when every interval covers (probability at least `confidence`, at every look)
  neither happens to a candidate whose gap is within the threshold and no wider than stable's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from rollwise_contract.metrics import (
    SEGMENT,
    SEGMENT_LABEL_ABS_ERROR,
    SEGMENT_LABEL_CORRECT,
    SEGMENT_LABEL_SQUARED_ERROR,
    SEGMENT_LABELLED,
    SEGMENT_PREDICTIONS,
    SEGMENT_ROWS,
    SEGMENT_SHADOW_AGREED,
    SEGMENT_SHADOW_COMPARED,
    SEGMENT_VALUE,
)

from rollwise.api.v1alpha1 import (
    AnalysisSpec,
    BuiltinMetric,
    Comparison,
    ComparisonResult,
    MetricCheck,
    ModelDeployment,
    Monitoring,
    ParityOf,
)
from rollwise.plan.compare import DEFAULT_CONFIDENCE, judge_success_rate, tolerance
from rollwise.plan.measurement import Counts, Judged, Outcome
from rollwise.plan.names import Track
from rollwise.plan.quality import QUALITY, SERIES, judge_accuracy, judge_agreement
from rollwise.plan.stats import Moments, mean_interval

Judge = Callable[[MetricCheck, Counts], Judged]


@dataclass(frozen=True)
class Segmented:
    """A check read per segment value: its counters (one series, or several told apart by
    `series`), the labels its counts are grouped by, and the judge of one segment's counts."""

    series: str
    several: dict[str, str] | None
    groups: tuple[str, ...]
    base: Judge
    mirrored: bool = False


BY_SEGMENT = {
    BuiltinMetric.SUCCESS_RATE: Segmented(
        f"{SEGMENT_ROWS}_total", None, ("track", SEGMENT_VALUE, "outcome"), judge_success_rate
    ),
    BuiltinMetric.ACCURACY: Segmented(
        "",
        {"labelled": f"{SEGMENT_LABELLED}_total", "correct": f"{SEGMENT_LABEL_CORRECT}_total"},
        ("track", SEGMENT_VALUE, SERIES),
        judge_accuracy,
    ),
    BuiltinMetric.MEAN_ABSOLUTE_ERROR: Segmented(
        "",
        {
            "n": f"{SEGMENT_LABELLED}_total",
            "total": f"{SEGMENT_LABEL_ABS_ERROR}_total",
            "squares": f"{SEGMENT_LABEL_SQUARED_ERROR}_total",
        },
        ("track", SEGMENT_VALUE, SERIES),
        QUALITY[BuiltinMetric.MEAN_ABSOLUTE_ERROR].judge,
    ),
    BuiltinMetric.PREDICTION_AGREEMENT: Segmented(
        "",
        {"compared": f"{SEGMENT_SHADOW_COMPARED}_total", "agreed": f"{SEGMENT_SHADOW_AGREED}_total"},
        (SEGMENT_VALUE, SERIES),
        judge_agreement,
        mirrored=True,
    ),
}
"""How each check `bySegment` can judge is counted per segment value."""

PARITY = {
    ParityOf.POSITIVE_RATE: Segmented(
        f"{SEGMENT_PREDICTIONS}_total", None, ("track", SEGMENT_VALUE, "class"), judge_success_rate
    ),
    ParityOf.ACCURACY: BY_SEGMENT[BuiltinMetric.ACCURACY],
}
"""The counters each kind of parity reads (its judge is `judge_parity`)."""


def segment_of(md: ModelDeployment, check: MetricCheck) -> str | None:
    """The segment feature a check splits by: its own `segment`, or the only one declared."""
    if check.segment is not None:
        return check.segment
    schema = md.spec.model.feature_schema
    declared = schema.segments if schema is not None else []
    return declared[0].feature if len(declared) == 1 else None


S = TypeVar("S", AnalysisSpec, Monitoring)


def resolved(md: ModelDeployment, spec: S) -> S:
    """`spec` with every segment check's `segment` filled in (the only declared one when unset), so
    its judge can name the segment it judged."""
    metrics = [
        m.model_copy(update={"segment": segment_of(md, m)}) if is_segmented(m) and m.segment is None else m
        for m in spec.metrics
    ]
    return spec.model_copy(update={"metrics": metrics})


def is_segmented(check: MetricCheck) -> bool:
    return check.by_segment is not None or check.builtin is BuiltinMetric.PARITY


def problems(md: ModelDeployment) -> list[str]:
    """Segment checks whose segment is not declared: the spec is Invalid, naming field and fix."""
    schema = md.spec.model.feature_schema
    declared = [s.feature for s in schema.segments] if schema is not None else []
    checks = [
        (
            "spec.rollout.analysis.metrics",
            md.spec.rollout.analysis.metrics if md.spec.rollout.analysis else [],
        ),
        ("spec.monitoring.metrics", md.spec.monitoring.metrics if md.spec.monitoring else []),
    ]
    out = []
    for where, metrics in checks:
        for i, check in enumerate(metrics):
            if not is_segmented(check):
                continue
            name = segment_of(md, check)
            if name is None:
                out.append(
                    f"{where}[{i}].segment: required when spec.model.featureSchema.segments declares "
                    f"{len(declared)} segments (it declares {declared or 'none'}); name one, or declare one"
                )
            elif name not in declared:
                out.append(
                    f"{where}[{i}].segment: {name!r} is not a segment of spec.model.featureSchema "
                    f"(declared: {declared or 'none'}); add it to featureSchema.segments or fix the name"
                )
    return out


def selector_extra(md: ModelDeployment, check: MetricCheck) -> str:
    """The label matcher confining a segment check's counters to its segment."""
    return f",{SEGMENT}={json.dumps(segment_of(md, check) or '')}"


def counted_for(check: MetricCheck) -> Segmented | None:
    if check.builtin is BuiltinMetric.PARITY and check.parity is not None:
        return PARITY[check.parity.of]
    if check.by_segment is not None and check.builtin is not None:
        return BY_SEGMENT.get(check.builtin)
    return None


def _values(counts: Counts, at: int) -> list[str]:
    return sorted({key[at] for key in counts.values if len(key) > at})


def _split(counts: Counts, at: int, value: str) -> Counts:
    """One segment value's counts, keyed as the whole-traffic judge reads them (`value` dropped)."""
    return Counts({k[:at] + k[at + 1 :]: v for k, v in counts.values.items() if k[at] == value})


def judge_worst(check: MetricCheck, counts: Counts) -> Judged:
    """bySegment worst: every segment value judged on its own at a Bonferroni confidence."""
    how = counted_for(check)
    assert how is not None
    at = how.groups.index(SEGMENT_VALUE)
    values = _values(counts, at)
    if not values:
        return Judged(Outcome.INCONCLUSIVE, None, "no data: no segment has counts yet")
    strict = _stricter(check, len(values))
    judged = {v: how.base(strict, _split(counts, at, v)) for v in values}
    failed = [v for v, j in judged.items() if j.outcome is Outcome.FAIL]
    segment = check.segment or "segment"
    if failed:
        worst = failed[0]
        reasons = "; ".join(f"{segment}={v}: {judged[v].reason}" for v in failed)
        return Judged(
            Outcome.FAIL,
            judged[worst].value,
            f"{len(failed)} of {len(values)} segments worse: {reasons}",
            judged[worst].comparison,
        )
    passed = [v for v, j in judged.items() if j.outcome is Outcome.PASS]
    thin = [v for v in values if v not in passed]
    note = f"; too thin to judge: {', '.join(thin)}" if thin else ""
    if not passed:
        first = judged[values[0]]
        return Judged(
            Outcome.INCONCLUSIVE,
            first.value,
            f"no segment judged yet ({segment}={values[0]}: {first.reason}){note}",
        )
    sign = -1.0 if check.builtin is BuiltinMetric.MEAN_ABSOLUTE_ERROR else 1.0  # higher error is worse

    def badness(v: str) -> float:
        value = judged[v].value
        return 0.0 if value is None else sign * value

    worst = min(passed, key=badness)
    line = (
        f"{len(passed)} of {len(values)} segments passed at {100 * _confidence(strict):g} % each; "
        f"worst {segment}={worst}: {judged[worst].reason}{note}"
    )
    return Judged(Outcome.PASS, judged[worst].value, line, judged[worst].comparison)


def _confidence(check: MetricCheck) -> float:
    rule = check.comparison or check.compare
    return rule.confidence if rule is not None else DEFAULT_CONFIDENCE


def _stricter(check: MetricCheck, k: int) -> MetricCheck:
    """The check at a confidence raised for `k` segments (Bonferroni). A shadow check has no
    comparison of its own: its guard rail's confidence (`quality.rail_confidence`) is raised."""
    if k <= 1:
        return check
    rule = check.comparison or Comparison(confidence=DEFAULT_CONFIDENCE)
    raised = rule.model_copy(update={"confidence": 1 - (1 - rule.confidence) / k})
    return check.model_copy(update={"compare": raised})


@dataclass(frozen=True)
class Rates:
    """One track's rate per segment value: successes and trials."""

    hits: dict[str, float]
    trials: dict[str, float]

    def intervals(self, alpha: float) -> dict[str, tuple[float, float, float]]:
        """(rate, lower, upper) per value with trials, the rate's confidence sequence with one
        success and one failure added (never an interval of width 0 from a handful of rows)."""
        out = {}
        for v, n in self.trials.items():
            if n <= 0:
                continue
            k = self.hits.get(v, 0.0)
            low, high = mean_interval(Moments(n + 2, k + 1, k + 1), alpha=alpha)
            out[v] = (k / n, max(low, 0.0), min(high, 1.0))
        return out


def _rates(check: MetricCheck, counts: Counts, track: Track) -> Rates:
    assert check.parity is not None
    hits: dict[str, float] = {}
    trials: dict[str, float] = {}
    t = str(track)
    for key, value in counts.values.items():
        if key[0] != t:
            continue
        segment, last = key[1], key[2]
        if check.parity.of is ParityOf.POSITIVE_RATE:
            trials[segment] = trials.get(segment, 0.0) + value
            if last == check.parity.positive_class:
                hits[segment] = hits.get(segment, 0.0) + value
        elif last == "labelled":
            trials[segment] = trials.get(segment, 0.0) + value
        elif last == "correct":
            hits[segment] = hits.get(segment, 0.0) + value
    return Rates(hits, trials)


def judge_parity(check: MetricCheck, counts: Counts) -> Judged:
    """parity: the candidate's gap between segments against the threshold and against stable's."""
    assert check.parity is not None
    rule = check.comparison
    confidence = rule.confidence if rule is not None else DEFAULT_CONFIDENCE
    cand, stable = _rates(check, counts, Track.CANDIDATE), _rates(check, counts, Track.STABLE)
    k = sum(1 for n in cand.trials.values() if n > 0) + sum(1 for n in stable.trials.values() if n > 0)
    alpha = (1 - confidence) / max(k, 1)
    ci_c, ci_s = cand.intervals(alpha), stable.intervals(alpha)
    what = (
        f"positive rate of {check.parity.positive_class!r}"
        if check.parity.of is ParityOf.POSITIVE_RATE
        else "accuracy"
    )
    segment = check.segment or "segment"
    if len(ci_c) < 2:
        return Judged(
            Outcome.INCONCLUSIVE,
            None,
            f"no data: the candidate has {len(ci_c)} segment(s) of {segment} with rows; a gap needs two",
        )
    gap_c, low_c, high_c = _gap(ci_c)
    top = max(ci_c, key=lambda v: ci_c[v][0])
    bottom = min(ci_c, key=lambda v: ci_c[v][0])
    line = (
        f"{what} by {segment}: gap {100 * gap_c:.1f} pp "
        f"({bottom} {100 * ci_c[bottom][0]:.1f} % .. {top} {100 * ci_c[top][0]:.1f} %)"
    )
    outside = 100 * low_c > (check.threshold.max if check.threshold.max is not None else float("inf"))
    why = (
        f"the gap is at least {100 * low_c:.1f} pp, outside {check.threshold.label()} "
        f"(at {100 * confidence:g} %)"
        if outside
        else ""
    )
    result, worse = None, False
    if rule is not None and len(ci_s) >= 2:
        gap_s, low_s, high_s = _gap(ci_s)
        lower, upper = 100 * (low_c - high_s), 100 * (high_c - low_s)
        worse = lower > tolerance(rule)
        result = ComparisonResult(
            candidate=100 * gap_c,
            stable=100 * gap_s,
            difference=100 * (gap_c - gap_s),
            lower=lower,
            upper=upper,
            confidence=confidence,
            candidate_samples=round(sum(cand.trials.values())),
            stable_samples=round(sum(stable.trials.values())),
            rule=f"wider when the candidate's smallest gap exceeds stable's largest by more than "
            f"{tolerance(rule):g} pp",
        )
        verdict = "wider" if worse else ("not wider" if upper <= tolerance(rule) else "undecided")
        line += (
            f" vs stable {100 * gap_s:.1f} pp ({lower:+.1f}..{upper:+.1f} pp at {100 * confidence:g} %): "
            f"{verdict}"
        )
    if worse or outside:
        return Judged(Outcome.FAIL, 100 * gap_c, "; ".join(r for r in (line, why) if r), result)
    n = sum(cand.trials.values())
    if n < check.samples_needed:
        return Judged(
            Outcome.INCONCLUSIVE,
            100 * gap_c,
            f"{n:.0f} rows on the candidate, fewer than minSamples {check.samples_needed}; {line}",
            result,
        )
    return Judged(Outcome.PASS, 100 * gap_c, line, result)


def _gap(ci: dict[str, tuple[float, float, float]]) -> tuple[float, float, float]:
    """The gap's estimate, smallest and largest values all intervals allow."""
    rates = [r for r, _, _ in ci.values()]
    lows = [lo for _, lo, _ in ci.values()]
    highs = [hi for _, _, hi in ci.values()]
    return max(rates) - min(rates), max(0.0, max(lows) - min(highs)), max(highs) - min(lows)
