"""The model judged as a model: checks on ground-truth labels and on shadow agreement (#15).

Label checks (accuracy, logLoss, meanAbsoluteError) read counters the server bumps when a label
sent to `/feedback` is joined to the prediction it names, attributed to the track that *made* the
prediction; each counts from the analysis start, like every built-in. They have the same two rules
as successRate:
- the guard rail: the candidate's own value against `threshold`, outside only when shown so at the
  comparison's confidence (a mixture SPRT for accuracy, `compare.rail`; a confidence sequence for
  the means);
- the comparison with stable's labels over the same time: accuracy as the difference of two error
  rates (`stats.rate_difference`), the means as a difference of means (`stats.mean_difference`),
  both confidence sequences, so looking every interval keeps the false-fail rate under
  `1 - confidence`.

Shadow checks (predictionAgreement, predictionDelta) read what the stable pod counted when it
compared the shadow's answer to each mirrored request with its own: they are one-sample rules on
that difference (a share of identical classes, a mean delta), since the comparison is built in.

A check passes only with `minSamples` labels (rows) on the candidate; fewer is inconclusive, but a
failure shown on fewer stands, as everywhere in the judge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rollwise_contract.metrics import (
    LABEL_ABS_ERROR,
    LABEL_CORRECT,
    LABEL_LOG_LOSS,
    LABEL_LOG_LOSS_SQUARED,
    LABEL_SQUARED_ERROR,
    LABEL_WITH_PROBABILITIES,
    LABELLED,
    SHADOW_AGREED,
    SHADOW_COMPARED,
    SHADOW_DELTA,
    SHADOW_DELTA_SQUARED,
)

from rollwise.api.v1alpha1 import BuiltinMetric, Comparison, ComparisonResult, MetricCheck
from rollwise.plan.compare import DEFAULT_CONFIDENCE, not_worse, rail, tolerance, worse
from rollwise.plan.measurement import Counts, Judged, Outcome
from rollwise.plan.names import Track
from rollwise.plan.stats import Moments, mean_difference, mean_interval, rate_difference

SERIES = "series"
"""The label a multi-series count query tells its counters apart by."""


@dataclass(frozen=True)
class Quality:
    """One quality check: the counters it reads (`series` label value -> exported series name),
    whether they are per track (labels) or the mirroring pod's (shadow), and its judge."""

    series: dict[str, str]
    per_track: bool
    judge: Callable[[MetricCheck, Counts], Judged]

    @property
    def groups(self) -> tuple[str, ...]:
        return ("track", SERIES) if self.per_track else (SERIES,)


def _get(counts: Counts, track: Track | None, series: str) -> float:
    return counts.get(str(track), series) if track is not None else counts.get(series)


def _moments(counts: Counts, track: Track | None, n: str, total: str, squares: str) -> Moments:
    return Moments(_get(counts, track, n), _get(counts, track, total), _get(counts, track, squares))


def _too_few(check: MetricCheck, n: float, noun: str) -> str:
    return (
        f"{n:.0f} {noun} on the candidate since the analysis started, fewer than minSamples "
        f"{check.samples_needed}"
    )


def judge_accuracy(check: MetricCheck, counts: Counts) -> Judged:
    """accuracy: the share of labelled predictions that were right (see the module docstring)."""
    n_c, ok_c = _get(counts, Track.CANDIDATE, "labelled"), _get(counts, Track.CANDIDATE, "correct")
    n_s, ok_s = _get(counts, Track.STABLE, "labelled"), _get(counts, Track.STABLE, "correct")
    if n_c <= 0:
        return Judged(Outcome.INCONCLUSIVE, None, "no data: no label has reached a candidate prediction yet")
    rule = check.comparison
    confidence = rule.confidence if rule is not None else DEFAULT_CONFIDENCE
    own = rail(check.threshold, ok_c, n_c, confidence, "labels")
    result = None
    if rule is not None and n_s > 0:
        interval = rate_difference(n_c - ok_c, n_c, n_s - ok_s, n_s, alpha=1 - rule.confidence)
        assert interval is not None
        result = ComparisonResult(
            candidate=100 * ok_c / n_c,
            stable=100 * ok_s / n_s,
            difference=100 * interval.estimate,
            lower=100 * interval.lower,
            upper=100 * interval.upper,
            confidence=rule.confidence,
            candidate_samples=round(n_c),
            stable_samples=round(n_s),
            rule=f"worse when the lower bound of (candidate - stable) wrong % exceeds {tolerance(rule):g}",
        )
    line = (
        f"accuracy {own.value:.1f} % vs stable {result.stable:.1f} % ({result.difference:+.1f} pp wrong, "
        f"{100 * result.confidence:g} % CI {result.lower or 0:+.1f}..{result.upper or 0:+.1f}; "
        f"{result.candidate_samples} vs {result.stable_samples} labels): {_verdict(result, rule)}"
        if result is not None and rule is not None
        else f"accuracy {own.value:.1f} % over {n_c:.0f} labels (stable: no labels to compare with)"
    )
    return _conclude(
        check,
        value=own.value,
        outside=own.outside,
        why=own.why,
        result=result,
        rule=rule,
        line=line,
        n_c=n_c,
        noun="labels",
    )


def _verdict(result: ComparisonResult, rule: Comparison) -> str:
    return "worse" if worse(result, rule) else ("not worse" if not_worse(result, rule) else "undecided")


def _conclude(
    check: MetricCheck,
    *,
    value: float,
    outside: bool,
    why: str,
    result: ComparisonResult | None,
    rule: Comparison | None,
    line: str,
    n_c: float,
    noun: str,
) -> Judged:
    """Fail when shown worse or outside; else pass, once the candidate has `minSamples`."""
    shown_worse = result is not None and rule is not None and worse(result, rule)
    if shown_worse or outside:
        return Judged(Outcome.FAIL, value, "; ".join(r for r in (line, why) if r), result)
    if n_c < check.samples_needed:
        return Judged(Outcome.INCONCLUSIVE, value, f"{_too_few(check, n_c, noun)}; {line}", result)
    no_worse = result is not None and rule is not None and not_worse(result, rule)
    return Judged(Outcome.PASS, value, line, result, not_worse=no_worse)


def _mean_check(
    name: str, unit: str, n: str, total: str, squares: str
) -> Callable[[MetricCheck, Counts], Judged]:
    """A check on a mean per label (log loss, absolute error): lower is better."""

    def judge(check: MetricCheck, counts: Counts) -> Judged:
        cand = _moments(counts, Track.CANDIDATE, n, total, squares)
        stable = _moments(counts, Track.STABLE, n, total, squares)
        if cand.n <= 0:
            return Judged(Outcome.INCONCLUSIVE, None, f"no data: no label has reached a candidate {name} yet")
        rule = check.comparison
        confidence = rule.confidence if rule is not None else DEFAULT_CONFIDENCE
        outside, why = _mean_rail(check, cand, confidence, unit)
        result = None
        if rule is not None and stable.n > 0:
            interval = mean_difference(cand, stable, alpha=1 - rule.confidence)
            result = ComparisonResult(
                candidate=cand.mean,
                stable=stable.mean,
                difference=interval.estimate,
                lower=interval.lower,
                upper=interval.upper,
                confidence=rule.confidence,
                candidate_samples=round(cand.n),
                stable_samples=round(stable.n),
                rule=f"worse when the lower bound of (candidate - stable) mean exceeds {tolerance(rule):g}",
            )
        line = (
            f"{name} {cand.mean:.4g} vs stable {stable.mean:.4g} ({result.difference:+.4g}{unit}, "
            f"{100 * result.confidence:g} % CI {result.lower or 0:+.4g}..{result.upper or 0:+.4g}; "
            f"{result.candidate_samples} vs {result.stable_samples} labels): {_verdict(result, rule)}"
            if result is not None and rule is not None
            else f"{name} {cand.mean:.4g} over {cand.n:.0f} labels (stable: no labels to compare with)"
        )
        return _conclude(
            check,
            value=cand.mean,
            outside=outside,
            why=why,
            result=result,
            rule=rule,
            line=line,
            n_c=cand.n,
            noun="labels",
        )

    return judge


def _mean_rail(check: MetricCheck, own: Moments, confidence: float, unit: str) -> tuple[bool, str]:
    """A mean against threshold.max (and .min): outside only when the whole confidence sequence is."""
    low, high = mean_interval(own, alpha=1 - confidence)
    t = check.threshold
    if (t.max is not None and low > t.max) or (t.min is not None and high < t.min):
        return True, (
            f"{own.mean:.4g}{unit} is outside {t.label()} (shown at {100 * confidence:g} % confidence: "
            f"{low:.4g}..{high:.4g} over {own.n:.0f})"
        )
    return False, ""


def rail_confidence(check: MetricCheck) -> float:
    """A shadow check's confidence: 0.99, or higher when set internally (per segment,
    `segments._stricter`; the API refuses `compare` on these checks)."""
    return check.compare.confidence if check.compare is not None else DEFAULT_CONFIDENCE


def judge_agreement(check: MetricCheck, counts: Counts) -> Judged:
    """predictionAgreement: the share of mirrored rows on which the shadow answered stable's class,
    below threshold.min only when shown at the confidence (`compare.rail`)."""
    n, agreed = counts.get("compared"), counts.get("agreed")
    if n <= 0:
        return Judged(Outcome.INCONCLUSIVE, None, "no data: stable has compared no shadow answer yet")
    own = rail(check.threshold, agreed, n, rail_confidence(check), "rows")
    line = f"agreement {own.value:.2f} % over {n:.0f} mirrored rows ({n - agreed:.0f} differ)"
    return _conclude(
        check,
        value=own.value,
        outside=own.outside,
        why=own.why,
        result=None,
        rule=None,
        line=line,
        n_c=n,
        noun="compared rows",
    )


def judge_delta(check: MetricCheck, counts: Counts) -> Judged:
    """predictionDelta: the mean |stable - shadow| per mirrored row, against threshold."""
    own = Moments(counts.get("compared"), counts.get("delta"), counts.get("squares"))
    if own.n <= 0:
        return Judged(Outcome.INCONCLUSIVE, None, "no data: stable has compared no shadow answer yet")
    outside, why = _mean_rail(check, own, rail_confidence(check), "")
    line = f"mean delta {own.mean:.4g} over {own.n:.0f} mirrored rows"
    return _conclude(
        check,
        value=own.mean,
        outside=outside,
        why=why,
        result=None,
        rule=None,
        line=line,
        n_c=own.n,
        noun="compared rows",
    )


QUALITY = {
    BuiltinMetric.ACCURACY: Quality(
        {"labelled": f"{LABELLED}_total", "correct": f"{LABEL_CORRECT}_total"}, True, judge_accuracy
    ),
    BuiltinMetric.LOG_LOSS: Quality(
        {
            "n": f"{LABEL_WITH_PROBABILITIES}_total",
            "total": f"{LABEL_LOG_LOSS}_total",
            "squares": f"{LABEL_LOG_LOSS_SQUARED}_total",
        },
        True,
        _mean_check("log loss", " nats", "n", "total", "squares"),
    ),
    BuiltinMetric.MEAN_ABSOLUTE_ERROR: Quality(
        {
            "n": f"{LABELLED}_total",
            "total": f"{LABEL_ABS_ERROR}_total",
            "squares": f"{LABEL_SQUARED_ERROR}_total",
        },
        True,
        _mean_check("mean absolute error", "", "n", "total", "squares"),
    ),
    BuiltinMetric.PREDICTION_AGREEMENT: Quality(
        {"compared": f"{SHADOW_COMPARED}_total", "agreed": f"{SHADOW_AGREED}_total"}, False, judge_agreement
    ),
    BuiltinMetric.PREDICTION_DELTA: Quality(
        {
            "compared": f"{SHADOW_DELTA}_count",
            "delta": f"{SHADOW_DELTA}_sum",
            "squares": f"{SHADOW_DELTA_SQUARED}_total",
        },
        False,
        judge_delta,
    ),
}
"""Each quality check's counters and judge."""
