"""latencyP99 against stable, on both tracks' latency histograms counted since the analysis started.

The rule is a test of "the candidate is no slower than stable plus the tolerance", read off the
histogram's buckets, because bucket counts are all Prometheus keeps:
- Let `t` be the tolerance (`compare.worseBy`, seconds) and `b` a bucket boundary. If every
  candidate request took at most what a stable one takes plus `t` (in distribution), then
  P(candidate > b) <= P(stable > b - t) <= P(stable > b'), where b' is the largest boundary at or
  below `b - t`. Both shares are exact counts.
- So at each boundary the judge bounds "share of candidate requests above b minus share of stable
  requests above b'" with the same confidence sequence as successRate (`stats.rate_difference`).
  The candidate is *worse* when that lower bound is above 0 at some boundary, and shown *not
  worse* when every upper bound is at most 1 percentage point (`NOT_SLOWER_SHARE`).
- Every boundary is tested at `(1 - confidence) / k` for `k` boundaries (Bonferroni), so the rule
  fails a candidate no slower than stable plus `t` in at most `1 - confidence` of rollouts, at every
  look; the bucket rounding only makes it more conservative.

Why a shift test over all boundaries and not only stable's p99: the p99's bucket would be chosen
from the same counts it is tested on; a fixed family of boundaries needs no such choice, and a
candidate slower by more than `t` in its median is slower for most users, not only in its tail.

The guard rail stays the check's `threshold`: the candidate's p99 since the analysis started,
interpolated in its buckets as `histogram_quantile` does, outside `max` only when more than 1 % of
requests are *shown* slower than it (`rail`), as successRate's rail is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rollwise.api.v1alpha1 import ComparisonResult, MetricCheck, ThresholdRange
from rollwise.plan.compare import DEFAULT_CONFIDENCE, tolerance
from rollwise.plan.measurement import Counts, Judged, Outcome
from rollwise.plan.names import Track
from rollwise.plan.stats import Interval, excess_evidence, rate_difference

LATENCY_GROUPS = ("track", "le")
"""The labels latencyP99's bucket counts are grouped by."""

QUANTILE = 0.99
"""The guard rail's quantile."""

NOT_SLOWER_SHARE = 0.01
"""Shown not slower: at every boundary, the candidate's excess share of slow requests is bounded by
1 percentage point (zero cannot be shown: in the far tail both shares are 0 and stay uncertain)."""

ROUNDING = 1e-9
"""Slack when a boundary minus the tolerance lands on another boundary (0.05 - 0.025 is 0.025)."""


@dataclass(frozen=True)
class Histogram:
    """One track's cumulative bucket counts since the analysis started, finite boundaries ascending."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    total: float

    @classmethod
    def of(cls, counts: Counts, track: Track, bounds: tuple[float, ...]) -> Histogram:
        by_le = counts.by_le(str(track))
        # A cumulative histogram never decreases; a scrape that caught buckets mid-update can, so
        # each count is at least the one below it.
        cumulative, running = [], 0.0
        for b in bounds:
            running = max(running, by_le.get(b, 0.0))
            cumulative.append(running)
        total = max(running, by_le.get(math.inf, 0.0))
        return cls(bounds, tuple(cumulative), total)

    def above(self, i: int) -> float:
        """Requests slower than boundary `i`."""
        return self.total - self.cumulative[i]

    def quantile(self, q: float) -> float | None:
        """`histogram_quantile(q)`: linear within the bucket holding rank q * total; the highest
        finite boundary when that rank is in +Inf; None without requests."""
        if self.total <= 0:
            return None
        rank = q * self.total
        lower_bound, lower_count = 0.0, 0.0
        for bound, count in zip(self.bounds, self.cumulative, strict=True):
            if count >= rank and count > lower_count:
                return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
            lower_bound, lower_count = bound, count
        return self.bounds[-1] if self.bounds else None


@dataclass(frozen=True)
class Shift:
    """One boundary's test: candidate's share above `bound` minus stable's above `against`."""

    bound: float
    against: float
    interval: Interval


def shifts(cand: Histogram, stable: Histogram, tolerance: float, *, alpha: float) -> list[Shift]:
    """Every boundary's test at `alpha / k` (the module docstring). A boundary with no boundary at
    or below it minus the tolerance is left out: stable's share above 0 is all its requests, so it
    could never show anything."""
    pairs = []
    for i, b in enumerate(cand.bounds):
        below = [j for j, other in enumerate(cand.bounds) if other <= b - tolerance + ROUNDING]
        if below:
            pairs.append((i, below[-1]))
    out = []
    for i, j in pairs:
        interval = rate_difference(
            cand.above(i), cand.total, stable.above(j), stable.total, alpha=alpha / len(pairs)
        )
        if interval is not None:
            out.append(Shift(cand.bounds[i], cand.bounds[j], interval))
    return out


@dataclass(frozen=True)
class Timing:
    """What one histogram check judges: its quantile for the guard rail, and how its messages name
    the value (`latency p99`) and what the histogram counts (requests)."""

    quantile: float
    name: str
    counted: str

    @property
    def label(self) -> str:
        return f"p{100 * self.quantile:g}"


LATENCY = Timing(QUANTILE, "latency", "requests")
"""latencyP99: request durations."""
FIRST_TOKEN = Timing(0.95, "time to first token", "answers")
"""timeToFirstTokenP95: one observation per answer (streamed or not), so the same rule and error
rates hold as for latencyP99: each answer is one independent draw."""


def rail(
    threshold: ThresholdRange, cand: Histogram, value: float, confidence: float, timing: Timing
) -> tuple[bool, str]:
    """The guard rail: the quantile above `threshold.max` means more than 1 - q of the observations
    slower than it, and that counts only when *shown* at `confidence` (`stats.excess_evidence` on
    those above the first boundary at or past max): a p99 from 20 requests is their slowest one. A
    max beyond the last boundary cannot be shown; a `min` is read as measured. `value` is the
    candidate's quantile, as `Histogram.quantile` gives it."""
    label = timing.label
    if threshold.min is not None and value < threshold.min:
        return True, f"{label} {value:.3g} s is outside {threshold.label()}"
    if threshold.max is None or value <= threshold.max:
        return False, ""
    at = next((i for i, b in enumerate(cand.bounds) if b >= threshold.max - ROUNDING), None)
    if at is None:
        return False, ""
    slow = cand.above(at)
    evidence = excess_evidence(slow, cand.total, 1 - timing.quantile)
    if evidence < 1 / (1 - confidence):
        return False, ""
    return True, (
        f"{label} {value:.3g} s is outside {threshold.label()} (shown at {100 * confidence:g} % confidence: "
        f"{100 * slow / cand.total:.1f} % of {cand.total:.0f} {timing.counted} above {cand.bounds[at]:g} s, "
        f"likelihood ratio {evidence:.3g})"
    )


def judge_latency(check: MetricCheck, counts: Counts) -> Judged:
    """latencyP99 on both tracks' bucket counts since the analysis started (the module docstring)."""
    return judge_timing(check, counts, LATENCY)


def judge_first_token(check: MetricCheck, counts: Counts) -> Judged:
    """timeToFirstTokenP95: the same shift test on the answers' time-to-first-token histograms."""
    return judge_timing(check, counts, FIRST_TOKEN)


def judge_timing(check: MetricCheck, counts: Counts, timing: Timing) -> Judged:
    """A histogram check on both tracks' bucket counts since the analysis started (the module
    docstring): the shift test against stable, and the guard rail on the candidate's quantile."""
    bounds = tuple(sorted({b for t in Track for b in counts.by_le(str(t)) if math.isfinite(b)}))
    cand = Histogram.of(counts, Track.CANDIDATE, bounds)
    stable = Histogram.of(counts, Track.STABLE, bounds)
    value = cand.quantile(timing.quantile)
    if value is None:
        return Judged(
            Outcome.INCONCLUSIVE, None, f"no data: the candidate served no {timing.counted} since it started"
        )
    rule = check.comparison
    outside, own = rail(
        check.threshold, cand, value, rule.confidence if rule is not None else DEFAULT_CONFIDENCE, timing
    )
    tests = shifts(cand, stable, tolerance(rule), alpha=1 - rule.confidence) if rule is not None else []
    if rule is None or not tests:
        return Judged(Outcome.FAIL if outside else Outcome.PASS, value, own)
    worst = max(tests, key=lambda s: s.interval.lower)
    shown = worst.interval.lower > 0
    noun = timing.counted
    result = ComparisonResult(
        candidate=value,
        stable=stable.quantile(timing.quantile) or 0.0,
        difference=100 * worst.interval.estimate,
        lower=100 * worst.interval.lower,
        upper=100 * worst.interval.upper,
        confidence=rule.confidence,
        candidate_samples=round(cand.total),
        stable_samples=round(stable.total),
        rule=f"worse when, at some bucket boundary b, the candidate's share of {noun} above b is "
        f"shown larger than stable's above b - {tolerance(rule):g} s",
    )
    settled = not shown and all(s.interval.upper <= NOT_SLOWER_SHARE for s in tests)
    verdict = "worse" if shown else ("not worse" if settled else "undecided")
    line = (
        f"{timing.name} {timing.label} {value:.3g} s vs stable {result.stable:.3g} s "
        f"({result.difference:+.1f} pp of {noun} above {worst.bound:g} s than stable's above "
        f"{worst.against:g} s, "
        f"{100 * rule.confidence:g} % CI {result.lower:+.1f}..{result.upper:+.1f}; "
        f"{result.candidate_samples} vs {result.stable_samples} {noun}): {verdict}"
    )
    if shown or outside:
        return Judged(Outcome.FAIL, value, "; ".join(r for r in (line, own) if r), result)
    return Judged(Outcome.PASS, value, line, result, not_worse=settled)
