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

A check where higher is better (outputTokensPerSecond, `Timing.higher_is_better`) is the mirror
image: "the candidate is no slower than stable's rate times (1 - t)", with `t` a fraction of
stable's value (`Timing.relative`). Then P(candidate <= b) <= P(stable <= b / (1 - t)) <=
P(stable <= b'), b' the smallest boundary at or above b / (1 - t), and each boundary tests the
candidate's share at or below b minus stable's at or below b'. Its rail is `threshold.min`, shown
as max is; its max is read as measured (as latencyP99's min is).
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


def shifts(
    cand: Histogram, stable: Histogram, tolerance: float, *, alpha: float, timing: Timing
) -> list[Shift]:
    """Every boundary's test at `alpha / k` (the module docstring). A boundary with no boundary at
    or below it minus the tolerance (at or above it plus the tolerance, when higher is better) is
    left out: stable's share there is all its observations, so it could never show anything.

    Worked example, outputTokensPerSecond at t = 0.2 on boundaries 8, 10, 12.5: b = 8 is compared
    with stable's share at or below 10 (8 / 0.8 = 10), b = 10 with 12.5, and b = 12.5 (12.5 / 0.8
    = 15.6, no boundary) is left out."""
    pairs = []
    for i, b in enumerate(cand.bounds):
        target = timing.against(b, tolerance)
        if target is None:
            continue
        if timing.higher_is_better:
            above = [j for j, other in enumerate(cand.bounds) if other >= target - ROUNDING]
            if above:
                pairs.append((i, above[0]))
        else:
            below = [j for j, other in enumerate(cand.bounds) if other <= target + ROUNDING]
            if below:
                pairs.append((i, below[-1]))
    out = []
    for i, j in pairs:
        interval = rate_difference(
            timing.worse_side(cand, i),
            cand.total,
            timing.worse_side(stable, j),
            stable.total,
            alpha=alpha / len(pairs),
        )
        if interval is not None:
            out.append(Shift(cand.bounds[i], cand.bounds[j], interval))
    return out


@dataclass(frozen=True)
class Timing:
    """What one histogram check judges: its quantile for the guard rail, how its messages name
    the value (`latency p99`), its unit and what the histogram counts (requests), and which way
    is worse."""

    quantile: float
    name: str
    counted: str
    unit: str = "s"
    higher_is_better: bool = False
    """Lower values are worse (a rate): the test looks at the shares at or below each boundary,
    and the rail at `threshold.min`."""
    relative: bool = False
    """`worseBy` is a fraction of stable's value (0.2: 20 %) rather than the check's unit."""

    @property
    def label(self) -> str:
        return f"p{100 * self.quantile:g}"

    def against(self, bound: float, tolerance: float) -> float | None:
        """The value stable's boundary is taken at for the candidate's `bound`: the bound moved by
        the tolerance towards better. None when no value can be (a relative tolerance of 1 or
        more, where higher is better: any rate is within it)."""
        if not self.relative:
            return bound + tolerance if self.higher_is_better else bound - tolerance
        if self.higher_is_better:
            return bound / (1 - tolerance) if tolerance < 1 else None
        return bound / (1 + tolerance)

    def worse_side(self, hist: Histogram, i: int) -> float:
        """The observations on the worse side of boundary `i`: above it, or at or below it when
        higher is better."""
        return hist.cumulative[i] if self.higher_is_better else hist.above(i)

    @property
    def side(self) -> str:
        return "at or below" if self.higher_is_better else "above"

    def moved(self, tolerance: float) -> str:
        """How the rule names stable's boundary: `b - 0.02 s`, `b / (1 - 0.2)`."""
        if self.relative:
            return f"b / (1 - {tolerance:g})" if self.higher_is_better else f"b / (1 + {tolerance:g})"
        return f"b + {tolerance:g} {self.unit}" if self.higher_is_better else f"b - {tolerance:g} {self.unit}"


LATENCY = Timing(QUANTILE, "latency", "requests")
"""latencyP99: request durations."""
FIRST_TOKEN = Timing(0.95, "time to first token", "answers")
"""timeToFirstTokenP95: one observation per answer (streamed or not), so the same rule and error
rates hold as for latencyP99: each answer is one independent draw."""
TIME_PER_TOKEN = Timing(0.95, "inter-token latency", "streamed answers")
"""interTokenLatencyP95: one observation per streamed answer of two or more chunks, its mean gap
between chunks (`rollwise_llm_time_per_output_token_seconds`), so each answer is again one
independent draw; the per-gap histogram is not (the gaps of one stream move together)."""
TOKENS_PER_SECOND = Timing(
    0.5, "output tokens/s", "answers", unit="tokens/s", higher_is_better=True, relative=True
)
"""outputTokensPerSecond: one observation per answer, its completion tokens over its whole time.
The median, since the rate is what a typical answer gets (the slow tail is the latency checks'),
and it is the quantile best estimated from the fewest answers. Higher is better; worseBy is a
fraction of stable's rate, since models run from 5 tokens/s (a CPU) to hundreds (a GPU)."""


def rail(
    threshold: ThresholdRange, cand: Histogram, value: float, confidence: float, timing: Timing
) -> tuple[bool, str]:
    """The guard rail: the quantile above `threshold.max` means more than 1 - q of the observations
    slower than it, and that counts only when *shown* at `confidence` (`stats.excess_evidence` on
    those above the first boundary at or past max): a p99 from 20 requests is their slowest one. A
    max beyond the last boundary cannot be shown; a `min` is read as measured. Where higher is
    better the roles swap: below `threshold.min` means more than q of the observations at or below
    it (those at or below the last boundary at or below min, shown the same way: a median from 3
    answers shows nothing), and a `max` is read as measured. `value` is the candidate's quantile, as
    `Histogram.quantile` gives it."""
    label, unit = timing.label, timing.unit
    measured, shown = (
        (threshold.max, threshold.min) if timing.higher_is_better else (threshold.min, threshold.max)
    )
    if measured is not None and (value > measured if timing.higher_is_better else value < measured):
        return True, f"{label} {value:.3g} {unit} is outside {threshold.label()}"
    if shown is None or (value >= shown if timing.higher_is_better else value <= shown):
        return False, ""
    if timing.higher_is_better:
        # shown below min: more than q of the answers at or below the last boundary at or below it
        at = next((i for i in reversed(range(len(cand.bounds))) if cand.bounds[i] <= shown + ROUNDING), None)
        share = timing.quantile
    else:
        at = next((i for i, b in enumerate(cand.bounds) if b >= shown - ROUNDING), None)
        share = 1 - timing.quantile
    if at is None:
        return False, ""
    slow = timing.worse_side(cand, at)
    evidence = excess_evidence(slow, cand.total, share)
    if evidence < 1 / (1 - confidence):
        return False, ""
    return True, (
        f"{label} {value:.3g} {unit} is outside {threshold.label()} "
        f"(shown at {100 * confidence:g} % confidence: "
        f"{100 * slow / cand.total:.1f} % of {cand.total:.0f} {timing.counted} {timing.side} "
        f"{cand.bounds[at]:g} {unit}, likelihood ratio {evidence:.3g})"
    )


def judge_latency(check: MetricCheck, counts: Counts) -> Judged:
    """latencyP99 on both tracks' bucket counts since the analysis started (the module docstring)."""
    return judge_timing(check, counts, LATENCY)


def judge_first_token(check: MetricCheck, counts: Counts) -> Judged:
    """timeToFirstTokenP95: the same shift test on the answers' time-to-first-token histograms."""
    return judge_timing(check, counts, FIRST_TOKEN)


def judge_time_per_token(check: MetricCheck, counts: Counts) -> Judged:
    """interTokenLatencyP95: the same shift test on the answers' mean gaps between tokens."""
    return judge_timing(check, counts, TIME_PER_TOKEN)


def judge_tokens_per_second(check: MetricCheck, counts: Counts) -> Judged:
    """outputTokensPerSecond: the mirrored shift test (lower is worse, relative tolerance) on the
    answers' output rates."""
    return judge_timing(check, counts, TOKENS_PER_SECOND)


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
    tests = (
        shifts(cand, stable, tolerance(rule), alpha=1 - rule.confidence, timing=timing)
        if rule is not None
        else []
    )
    if rule is None or not tests:
        return Judged(Outcome.FAIL if outside else Outcome.PASS, value, own)
    worst = max(tests, key=lambda s: s.interval.lower)
    shown = worst.interval.lower > 0
    noun, unit, side = timing.counted, timing.unit, timing.side
    result = ComparisonResult(
        candidate=value,
        stable=stable.quantile(timing.quantile) or 0.0,
        difference=100 * worst.interval.estimate,
        lower=100 * worst.interval.lower,
        upper=100 * worst.interval.upper,
        confidence=rule.confidence,
        candidate_samples=round(cand.total),
        stable_samples=round(stable.total),
        rule=f"worse when, at some bucket boundary b, the candidate's share of {noun} {side} b is "
        f"shown larger than stable's {side} {timing.moved(tolerance(rule))}",
    )
    settled = not shown and all(s.interval.upper <= NOT_SLOWER_SHARE for s in tests)
    verdict = "worse" if shown else ("not worse" if settled else "undecided")
    line = (
        f"{timing.name} {timing.label} {value:.3g} {unit} vs stable {result.stable:.3g} {unit} "
        f"({result.difference:+.1f} pp of {noun} {side} {worst.bound:g} {unit} than stable's {side} "
        f"{worst.against:g} {unit}, "
        f"{100 * rule.confidence:g} % CI {result.lower:+.1f}..{result.upper:+.1f}; "
        f"{result.candidate_samples} vs {result.stable_samples} {noun}): {verdict}"
    )
    if shown or outside:
        return Judged(Outcome.FAIL, value, "; ".join(r for r in (line, own) if r), result)
    return Judged(Outcome.PASS, value, line, result, not_worse=settled)
