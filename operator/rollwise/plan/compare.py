"""The candidate against stable, on exact counts since the analysis started: successRate and a
classifier's predictionDrift (`judge_prediction_drift`, at the end).

successRate has two rules on the same counts; either fails the measurement:
- the guard rail: the candidate's own success percentage against `threshold` (the SLO), below
  `min` only when shown so at the comparison's confidence (`rail`);
- the comparison, while stable served requests too: the candidate's failure rate minus stable's,
  every non-success outcome counted on both tracks (refusals included: both tracks see the same
  requests, so a client sending garbage raises both, and a candidate that changed its input
  contract raises only its own), with a confidence sequence (`stats.rate_difference`). The
  candidate is *worse* when the whole interval lies above `worseBy`.

While the comparison runs, the guard rail leaves client errors out (the comparison owns them).
Without stable requests there is nothing to compare with, and the candidate's client errors count
against it beyond stable's share and sampling noise (`client_error_excess`), as before comparisons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rollwise_contract.metrics import Outcome as RequestOutcome

from rollwise.api.v1alpha1 import Comparison, ComparisonResult, MetricCheck, ThresholdRange
from rollwise.plan.measurement import Counts, Judged, Outcome
from rollwise.plan.names import Track
from rollwise.plan.stats import excess_evidence, homogeneity_evidence, rate_difference

SUCCESS_GROUPS = ("track", "outcome")
"""The labels successRate's counts are grouped by."""

CLIENT_ERROR_Z = 2.326
"""One-sided 99 % normal quantile: without a comparison, a candidate's client errors beyond stable's
share count as its failures only past this many standard errors of sampling noise."""


@dataclass(frozen=True)
class TrackCounts:
    """One track's requests since the analysis started, by outcome."""

    ok: float
    server_errors: float
    fallbacks: float
    client_errors: float

    @property
    def requests(self) -> float:
        return self.ok + self.server_errors + self.fallbacks + self.client_errors

    @property
    def judged(self) -> float:
        """Requests the server answered or failed on its own account (client errors left out)."""
        return self.ok + self.server_errors + self.fallbacks

    @classmethod
    def of(cls, counts: Counts, track: Track) -> TrackCounts:
        t = str(track)
        return cls(
            ok=counts.get(t, RequestOutcome.SUCCESS),
            server_errors=counts.get(t, RequestOutcome.SERVER_ERROR),
            fallbacks=counts.get(t, RequestOutcome.FALLBACK),
            client_errors=counts.get(t, RequestOutcome.CLIENT_ERROR),
        )


def client_error_excess(cl_c: float, n_c: float, cl_s: float, n_s: float) -> float:
    """The candidate's client errors beyond stable's share, less sampling noise. `cl_*` client
    errors, `n_*` all requests of a track.

    Under equal shares p (pooled over both tracks) the candidate's excess over `n_c * share_s` has
    variance `n_c p (1 - p) (1 + n_c / n_s)` (its own draw and the error of stable's estimate).
    Without stable traffic there is nothing to compare with: every client error counts.
    """
    if n_s <= 0:
        return max(cl_c, 0.0)
    share = cl_s / n_s
    pooled = (cl_c + cl_s) / max(n_c + n_s, 1e-9)
    noise = CLIENT_ERROR_Z * math.sqrt(max(n_c * pooled * (1 - pooled) * (1 + n_c / max(n_s, 1.0)), 0.0))
    return max(cl_c - n_c * share - noise, 0.0)


DEFAULT_CONFIDENCE = 0.99
"""The guard rail's confidence when the check makes no comparison."""


@dataclass(frozen=True)
class Rail:
    """The guard rail's reading: the success percentage and whether it is shown outside."""

    value: float
    outside: bool
    why: str


def rail(threshold: ThresholdRange, ok: float, n: float, confidence: float, noun: str = "requests") -> Rail:
    """The candidate's success percentage against `threshold`. Below `min` counts only when shown
    at `confidence` (`stats.excess_evidence`: 2 failures in 20 requests are not proof of a rate
    above 1 %, 6 are); above `max` is read as measured."""
    value = 100 * ok / n
    if threshold.max is not None and value > threshold.max:
        return Rail(value, True, f"{value:.4g} is outside {threshold.label()}")
    if threshold.min is None or value >= threshold.min:
        return Rail(value, False, "")
    evidence = excess_evidence(n - ok, n, 1 - threshold.min / 100)
    if evidence < 1 / (1 - confidence):
        return Rail(value, False, "")
    return Rail(
        value,
        True,
        f"{value:.4g} is outside {threshold.label()} (shown at {100 * confidence:g} % confidence: "
        f"likelihood ratio {evidence:.3g} over {n:.0f} {noun})",
    )


def compared(cand: TrackCounts, stable: TrackCounts, rule: Comparison) -> ComparisonResult | None:
    """The comparison in percent and percentage points; None without requests on either track."""
    interval = rate_difference(
        cand.requests - cand.ok, cand.requests, stable.requests - stable.ok, stable.requests,
        alpha=1 - rule.confidence,
    )  # fmt: skip
    if interval is None:
        return None
    return ComparisonResult(
        candidate=100 * cand.ok / cand.requests,
        stable=100 * stable.ok / stable.requests,
        difference=100 * interval.estimate,
        lower=100 * interval.lower,
        upper=100 * interval.upper,
        confidence=rule.confidence,
        candidate_samples=round(cand.requests),
        stable_samples=round(stable.requests),
        rule=f"worse when the lower bound of (candidate - stable) failed % exceeds {tolerance(rule):g}",
    )


def tolerance(rule: Comparison) -> float:
    """`worseBy` in the check's unit (`MetricCheck.comparison` fills the check's default)."""
    return 0.0 if rule.worse_by is None else rule.worse_by


def worse(result: ComparisonResult, rule: Comparison) -> bool:
    return result.lower is not None and result.lower > tolerance(rule)


def not_worse(result: ComparisonResult, rule: Comparison) -> bool:
    """Shown no worse than the tolerance: the whole interval lies at or below it."""
    return result.upper is not None and result.upper <= tolerance(rule)


def explain(result: ComparisonResult, rule: Comparison) -> str:
    """One line a human reads, e.g. `success 70.0 % vs stable 100.0 % (+30.0 pp failed, 99 % CI
    +12.1..+47.9; 40 vs 160 requests): worse`."""
    lower, upper = result.lower or 0.0, result.upper or 0.0
    verdict = "worse" if worse(result, rule) else ("not worse" if not_worse(result, rule) else "undecided")
    c, st = result.candidate, result.stable
    return (
        f"success {c:.1f} % vs stable {st:.1f} % ({result.difference:+.1f} pp failed, "
        f"{100 * result.confidence:g} % CI {lower:+.1f}..{upper:+.1f}; "
        f"{result.candidate_samples} vs {result.stable_samples} requests): {verdict}"
    )


def judge_success_rate(check: MetricCheck, counts: Counts) -> Judged:
    """successRate on exact counts since the analysis started (the module docstring's rules)."""
    cand, stable = TrackCounts.of(counts, Track.CANDIDATE), TrackCounts.of(counts, Track.STABLE)
    if cand.requests <= 0:
        return Judged(
            Outcome.INCONCLUSIVE, None, "no data: the candidate served no requests since it started"
        )
    rule = check.comparison
    result = compared(cand, stable, rule) if rule is not None else None
    if result is None or rule is None:
        return _alone(check.threshold, cand, stable)
    line = explain(result, rule)
    if cand.judged <= 0:
        if worse(result, rule):
            return Judged(Outcome.FAIL, None, line, result)
        why = f"no data: every candidate request was a client error; {line}"
        return Judged(Outcome.INCONCLUSIVE, None, why, result)
    own = rail(check.threshold, cand.ok, cand.judged, rule.confidence)
    reasons = [line] + ([own.why] if own.outside else [])
    if worse(result, rule) or own.outside:
        return Judged(Outcome.FAIL, own.value, "; ".join(reasons), result)
    return Judged(Outcome.PASS, own.value, line, result, not_worse=not_worse(result, rule))


def _alone(threshold: ThresholdRange, cand: TrackCounts, stable: TrackCounts) -> Judged:
    """The guard rail without a comparison: client errors count beyond stable's share and noise."""
    excess = client_error_excess(cand.client_errors, cand.requests, stable.client_errors, stable.requests)
    denominator = cand.judged + excess
    if denominator <= 0:
        return Judged(Outcome.INCONCLUSIVE, None, "no data: every candidate request was a client error")
    own = rail(threshold, cand.ok, denominator, DEFAULT_CONFIDENCE)
    return Judged(Outcome.FAIL if own.outside else Outcome.PASS, own.value, own.why)


PSI_FLOOR = 0.0001
"""Shares are floored at 0.01 % before the PSI logarithm, so a class one side never predicts
gives a large finite PSI instead of +Inf or NaN (the usual PSI epsilon)."""

DRIFT_GROUPS = ("track", "class")
"""The labels predictionDrift's counts are grouped by."""


def judge_prediction_drift(check: MetricCheck, counts: Counts) -> Judged:
    """predictionDrift of a classifier on exact per-class counts since the analysis started: the PSI
    of the two tracks' class shares against `threshold`, failed only when the shares are also shown
    to differ (`stats.homogeneity_evidence` at the comparison's confidence)."""
    classes = sorted({key[1] for key in counts.values})
    cand = [counts.get(str(Track.CANDIDATE), k) for k in classes]
    stable = [counts.get(str(Track.STABLE), k) for k in classes]
    return judge_shares(check, classes, cand, stable, "class shares")


REGRESSOR_DRIFT_GROUPS = ("track", "le")
"""The labels a regressor's prediction buckets are grouped by."""


def judge_regressor_drift(check: MetricCheck, counts: Counts) -> Judged:
    """predictionDrift of a regressor: its predictions' histogram bins are its classes. Bins are
    the boundaries both tracks export (a candidate shipping other bins is compared on the common
    ones, which sum its finer bins exactly), so the rule is the classifier's (`judge_shares`)."""
    cand_le = counts.by_le(str(Track.CANDIDATE))
    stable_le = counts.by_le(str(Track.STABLE))
    edges = (
        sorted((set(cand_le) & set(stable_le)) | {math.inf}) if stable_le else sorted({*cand_le, math.inf})
    )
    names = [f"<= {e:g}" if math.isfinite(e) else "above" for e in edges]
    return judge_shares(check, names, bins_at(cand_le, edges), bins_at(stable_le, edges), "prediction bins")


def bins_at(cumulative: dict[float, float], edges: list[float]) -> list[float]:
    """Per-bin counts at `edges` from cumulative `le` counts (never negative: a scrape mid-update)."""
    out, below = [], 0.0
    for e in edges:
        at = max(cumulative.get(e, below), below)
        out.append(at - below)
        below = at
    return out


def psi_of(live: list[float], base: list[float]) -> tuple[float, int]:
    """The PSI of two share vectors, each share floored at `PSI_FLOOR`, and the index of the bin
    whose share moved most."""
    a = [max(x, PSI_FLOOR) for x in live]
    b = [max(x, PSI_FLOOR) for x in base]
    psi = sum((x - y) * math.log(x / y) for x, y in zip(a, b, strict=True))
    return psi, max(range(len(a)), key=lambda i: abs(a[i] - b[i]))


def judge_shares(
    check: MetricCheck, classes: list[str], cand: list[float], stable: list[float], noun: str
) -> Judged:
    """The PSI of two tracks' shares over `classes` against `threshold`, failed only when the
    shares are also shown to differ at the comparison's confidence."""
    n_c, n_s = sum(cand), sum(stable)
    if n_c <= 0:
        return Judged(
            Outcome.INCONCLUSIVE, None, "no data: the candidate made no predictions since it started"
        )
    if n_s <= 0:
        return Judged(Outcome.INCONCLUSIVE, None, "no data: stable made no predictions to compare with")
    psi, moved = psi_of([c / n_c for c in cand], [x / n_s for x in stable])
    rule = check.comparison
    confidence = rule.confidence if rule is not None else DEFAULT_CONFIDENCE
    evidence = homogeneity_evidence(cand, stable) if rule is not None else math.inf
    result = ComparisonResult(
        candidate=100 * cand[moved] / n_c,
        stable=100 * stable[moved] / n_s,
        difference=psi,
        evidence=evidence if math.isfinite(evidence) else None,
        confidence=confidence,
        candidate_samples=round(n_c),
        stable_samples=round(n_s),
        rule=f"drifted when PSI is outside {check.threshold.label()} and the likelihood ratio reaches "
        f"{1 / (1 - confidence):g}",
    )
    outside = not check.threshold.contains(psi)
    shown = evidence >= 1 / (1 - confidence)
    verdict = "drifted" if outside and shown else ("within threshold" if not outside else "not shown")
    line = (
        f"{noun} PSI {psi:.3g} vs stable (most moved: {classes[moved]} {result.candidate:.1f} % vs "
        f"{result.stable:.1f} %; likelihood ratio {evidence:.3g}; {result.candidate_samples} vs "
        f"{result.stable_samples} predictions): {verdict}"
    )
    return Judged(Outcome.FAIL if outside and shown else Outcome.PASS, psi, line, result)


CUSTOM_GROUPS = ("track",)
"""The label a comparing query's two answers are told apart by."""


def judge_custom(check: MetricCheck, counts: Counts) -> Judged:
    """A query that compares: its value for each track, the candidate worse when it exceeds
    stable's by more than `worseBy` in the threshold's direction (higher is worse with `max`).
    Prometheus gives no sample counts for an arbitrary query, so both values are read as measured,
    as a threshold on a query is: no confidence, no stated error rate; the built-ins have those."""
    rule = check.comparison
    cand = counts.values.get((str(Track.CANDIDATE),))
    stable = counts.values.get((str(Track.STABLE),))
    if cand is None or math.isnan(cand):
        return Judged(Outcome.INCONCLUSIVE, None, "no data: the query returned nothing for the candidate")
    outside = not check.threshold.contains(cand)
    own = f"{cand:g} is outside {check.threshold.label()}" if outside else ""
    if rule is None or stable is None or math.isnan(stable):
        return Judged(
            Outcome.FAIL if outside else Outcome.PASS, cand, own or "stable: no value to compare with"
        )
    higher_is_worse = check.threshold.max is not None
    difference = cand - stable if higher_is_worse else stable - cand
    is_worse = difference > tolerance(rule)
    result = ComparisonResult(
        candidate=cand,
        stable=stable,
        difference=difference,
        confidence=rule.confidence,
        candidate_samples=0,
        stable_samples=0,
        rule=f"worse when the candidate's value is {'above' if higher_is_worse else 'below'} stable's by "
        f"more than {tolerance(rule):g} (read as measured)",
    )
    line = (
        f"{cand:g} vs stable {stable:g} ({difference:+g} worse, tolerance {tolerance(rule):g}): "
        f"{'worse' if is_worse else 'not worse'}"
    )
    if is_worse or outside:
        return Judged(Outcome.FAIL, cand, "; ".join(r for r in (line, own) if r), result)
    return Judged(Outcome.PASS, cand, line, result)
