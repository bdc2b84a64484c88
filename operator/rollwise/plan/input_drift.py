"""inputDrift on bucket counts since the analysis started: each feature's live values against the
reference the model ships, or, without one, against stable's inputs over the same time.

The server exports every feature's values in the reference's bins (`rollwise_feature_value`) and
the reference's own shares at the same bounds (`rollwise_feature_reference_share`), so one query
brings the candidate's, stable's and the reference's bins (`track="reference"`).

Per feature the effect size is the PSI (shares floored at 0.01 %), against `threshold.max`. As for
predictionDrift, a PSI above it fails only when it is *shown* above it: its lower confidence bound
(`stats.psi_lower_bound`, the reference's shares known exactly) is outside too. With k features
watched, each bound is at `(1 - confidence) / k` (Bonferroni), so a candidate whose every
feature's true PSI is within the threshold is failed in at most `1 - confidence` of rollouts, at
every look. `compare: {enabled: false}` reads the PSI as measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rollwise.api.v1alpha1 import ComparisonResult, MetricCheck
from rollwise.plan.compare import DEFAULT_CONFIDENCE, PSI_FLOOR, bins_at
from rollwise.plan.measurement import Counts, Judged, Outcome
from rollwise.plan.names import Track
from rollwise.plan.stats import psi_lower_bound

INPUT_GROUPS = ("track", "feature", "le")
"""The labels inputDrift's counts are grouped by."""

REFERENCE = "reference"
"""The `track` value the query gives the reference's shares."""


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    against: str
    psi: float
    lower: float | None
    """The PSI's lower confidence bound; None when not needed (the PSI within the threshold) or
    not compared."""
    moved: str
    live: float
    """The most moved bin's share of the candidate's values, percent."""
    base: float
    """Its share in the reference or in stable's values, percent."""
    candidate_samples: float
    base_samples: float


def _cumulative(counts: Counts, track: str, feature: str) -> dict[float, float]:
    out: dict[float, float] = {}
    for key, value in counts.values.items():
        if key[0] == track and key[1] == feature:
            try:
                out[float(key[2])] = value
            except ValueError:
                continue
    return out


def _psi(live: list[float], base: list[float]) -> tuple[float, int]:
    """PSI of two share vectors (floored) and the index of the most moved bin."""
    a = [max(x, PSI_FLOOR) for x in live]
    b = [max(x, PSI_FLOOR) for x in base]
    psi = sum((x - y) * math.log(x / y) for x, y in zip(a, b, strict=True))
    return psi, max(range(len(a)), key=lambda i: abs(a[i] - b[i]))


def feature_drift(
    counts: Counts, feature: str, *, alpha: float | None, threshold: float | None = None
) -> FeatureDrift | None:
    """One feature's PSI and its lower bound at `alpha` (None: not compared); None without
    candidate values or anything to compare with."""
    cand = _cumulative(counts, str(Track.CANDIDATE), feature)
    reference = _cumulative(counts, REFERENCE, feature)
    stable = _cumulative(counts, str(Track.STABLE), feature)
    if reference:
        edges = sorted(set(reference) | {math.inf})
        base_bins, against = bins_at(reference, edges), REFERENCE
    elif stable:
        edges = sorted((set(cand) & set(stable)) | {math.inf})
        base_bins, against = bins_at(stable, edges), "stable"
    else:
        return None
    live_bins = bins_at(cand, edges)
    n_live, n_base = sum(live_bins), sum(base_bins)
    if n_live <= 0 or n_base <= 0:
        return None
    live = [x / n_live for x in live_bins]
    base = [x / n_base for x in base_bins]
    psi, moved = _psi(live, base)
    lower = None
    if alpha is not None and (threshold is None or psi > threshold):  # never above the estimate
        lower = psi_lower_bound(live_bins, base_bins, alpha=alpha, base_fixed=against == REFERENCE)
    edge = edges[moved]
    name = f"<= {edge:g}" if math.isfinite(edge) else "above"
    return FeatureDrift(
        feature, against, psi, lower, name, 100 * live[moved], 100 * base[moved], n_live,
        n_base if against != REFERENCE else 0.0,
    )  # fmt: skip


def _shown(check: MetricCheck, d: FeatureDrift, *, compared: bool) -> bool:
    """The feature's PSI is shown outside the threshold (as measured when not compared)."""
    return not compared or (d.lower is not None and not check.threshold.contains(d.lower))


def judge_input_drift(check: MetricCheck, counts: Counts) -> Judged:
    """inputDrift on counts since the analysis started (the module docstring's rule)."""
    features = sorted({key[1] for key in counts.values if key[0] == str(Track.CANDIDATE)})
    rule = check.comparison
    confidence = rule.confidence if rule is not None else DEFAULT_CONFIDENCE
    alpha = (1 - confidence) / max(len(features), 1) if rule is not None else None
    judged = [
        d for f in features if (d := feature_drift(counts, f, alpha=alpha, threshold=check.threshold.max))
    ]
    if not judged:
        return Judged(
            Outcome.INCONCLUSIVE,
            None,
            "no data: no candidate feature values since it started, or no reference or stable values "
            "to compare them with",
        )
    drifted = [
        d
        for d in judged
        if not check.threshold.contains(d.psi) and _shown(check, d, compared=rule is not None)
    ]
    worst = max(drifted or judged, key=lambda d: d.psi)
    result = ComparisonResult(
        candidate=worst.live,
        stable=worst.base,
        difference=worst.psi,
        lower=worst.lower,
        confidence=confidence,
        candidate_samples=round(worst.candidate_samples),
        stable_samples=round(worst.base_samples),
        rule=f"drifted when a feature's PSI lower bound is outside {check.threshold.label()} "
        f"({100 * confidence:g} % over {len(features)} feature(s))",
    )
    verdict = "drifted" if drifted else (
        "within threshold" if check.threshold.contains(worst.psi) else "not shown"
    )  # fmt: skip
    bound = f"; lower bound {worst.lower:.3g}" if worst.lower is not None else ""
    line = (
        f"input {worst.feature} PSI {worst.psi:.3g} vs {worst.against} (most moved: {worst.moved} "
        f"{worst.live:.1f} % vs {worst.base:.1f} %{bound}; "
        f"{result.candidate_samples} values; {len(judged)} feature(s)): {verdict}"
    )
    return Judged(Outcome.FAIL if drifted else Outcome.PASS, worst.psi, line, result)
