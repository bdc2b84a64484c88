"""inputDrift on bucket counts since the analysis started: each feature's live values against the
reference the model ships, or, without one, against stable's inputs over the same time.

The server exports every feature's values in the reference's bins (`rollwise_feature_value`) and
the reference's own shares at the same bounds (`rollwise_feature_reference_share`), so one query
brings the candidate's, stable's and the reference's bins (`track="reference"`).

Per feature the effect size is the PSI (shares floored at 0.01 %), against `threshold.max`. As for
predictionDrift, a PSI above it fails only when the shares are also *shown* to differ: against a
reference by `stats.fixed_shares_evidence`, against stable by `stats.homogeneity_evidence`. With k
features watched, each is held to `k / (1 - confidence)` (Bonferroni), so a candidate whose
inputs match in every feature is failed in at most `1 - confidence` of rollouts, at every look.
`compare: {enabled: false}` reads the PSI as measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rollwise.api.v1alpha1 import ComparisonResult, MetricCheck
from rollwise.plan.compare import DEFAULT_CONFIDENCE, bins_at, psi_of
from rollwise.plan.measurement import Counts, Judged, Outcome
from rollwise.plan.names import Track
from rollwise.plan.stats import fixed_shares_evidence, homogeneity_evidence

INPUT_GROUPS = ("track", "feature", "le")
"""The labels inputDrift's counts are grouped by."""

REFERENCE = "reference"
"""The `track` value the query gives the reference's shares."""


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    against: str
    psi: float
    evidence: float
    moved: str
    live: float
    """The most moved bin's share of the candidate's values, percent."""
    base: float
    """Its share in the reference or in stable's values, percent."""
    candidate_samples: float
    base_samples: float


def feature_drift(counts: Counts, feature: str, *, evidence: bool) -> FeatureDrift | None:
    """One feature's PSI and evidence; None without candidate values or anything to compare with."""
    cand = counts.by_le(str(Track.CANDIDATE), feature)
    reference = counts.by_le(REFERENCE, feature)
    stable = counts.by_le(str(Track.STABLE), feature)
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
    psi, moved = psi_of(live, base)
    shown = math.inf
    if evidence:
        shown = (
            fixed_shares_evidence(live_bins, base) if against == REFERENCE
            else homogeneity_evidence(live_bins, base_bins)
        )  # fmt: skip
    edge = edges[moved]
    name = f"<= {edge:g}" if math.isfinite(edge) else "above"
    return FeatureDrift(
        feature, against, psi, shown, name, 100 * live[moved], 100 * base[moved], n_live,
        n_base if against != REFERENCE else 0.0,
    )  # fmt: skip


def judge_input_drift(check: MetricCheck, counts: Counts) -> Judged:
    """inputDrift on counts since the analysis started (the module docstring's rule)."""
    features = sorted({key[1] for key in counts.values if key[0] == str(Track.CANDIDATE)})
    rule = check.comparison
    judged = [d for f in features if (d := feature_drift(counts, f, evidence=rule is not None))]
    if not judged:
        return Judged(
            Outcome.INCONCLUSIVE,
            None,
            "no data: no candidate feature values since it started, or no reference or stable values "
            "to compare them with",
        )
    confidence = rule.confidence if rule is not None else DEFAULT_CONFIDENCE
    bar = len(judged) / (1 - confidence)
    drifted = [d for d in judged if not check.threshold.contains(d.psi) and d.evidence >= bar]
    worst = max(drifted or judged, key=lambda d: d.psi)
    result = ComparisonResult(
        candidate=worst.live,
        stable=worst.base,
        difference=worst.psi,
        evidence=worst.evidence if math.isfinite(worst.evidence) else None,
        confidence=confidence,
        candidate_samples=round(worst.candidate_samples),
        stable_samples=round(worst.base_samples),
        rule=f"drifted when a feature's PSI is outside {check.threshold.label()} and its likelihood ratio "
        f"reaches {bar:g} ({len(judged)} feature(s) at {1 / (1 - confidence):g} each)",
    )
    verdict = "drifted" if drifted else (
        "within threshold" if check.threshold.contains(worst.psi) else "not shown"
    )  # fmt: skip
    line = (
        f"input {worst.feature} PSI {worst.psi:.3g} vs {worst.against} (most moved: {worst.moved} "
        f"{worst.live:.1f} % vs {worst.base:.1f} %; likelihood ratio {worst.evidence:.3g}; "
        f"{result.candidate_samples} values; {len(judged)} feature(s)): {verdict}"
    )
    return Judged(Outcome.FAIL if drifted else Outcome.PASS, worst.psi, line, result)
