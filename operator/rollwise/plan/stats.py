"""The statistics of the comparative judge: a confidence sequence for the difference of two rates.

Why a confidence *sequence* and not a test per interval: the operator looks at the evidence every
interval of a step and acts on the first look that is decisive. A fixed-sample test at level alpha,
looked at 20 times, rejects a true null far more often than alpha; a confidence sequence covers the
true difference at every look at once (time-uniformly), so "the whole interval lies above the
tolerance at some look" happens, for a candidate no worse than the tolerance, with probability at
most alpha however often and however long one looks.

The sequence is the asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy and Ramdas
("Time-uniform central limit theory and asymptotic confidence sequences", 2021, Theorem 2.2, the
Robbins normal-mixture boundary) applied to the inverse-propensity difference of one request:
psi = Y * Z / pi - Y * (1 - Z) / (1 - pi), Y = 1 when the request failed, Z = 1 when the candidate
answered it, pi the candidate's share of requests. Its mean is p_candidate - p_stable, and its mean
and variance need only the four counts, which is all Prometheus gives (no request order).

Its validity is asymptotic; the mixture's `+ 1` terms keep it wide while few requests are in, and
tests/unit/test_stats.py and bench/detection.py measure the false-fail rate on simulated A/A
rollouts at 2, 20 and 200 requests/s, with a rare and a common failure rate on both tracks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

HORIZON_REQUESTS = 500
"""Where the boundary is tightest: the mixture is tuned for about this many requests in a step
(both tracks together). Tighter earlier means wider later; 500 is 25 s at 20 requests/s."""


@dataclass(frozen=True)
class Interval:
    """An estimate of candidate minus stable, with its time-uniform confidence bounds."""

    estimate: float
    lower: float
    upper: float


def _rho_squared(alpha: float, horizon: float) -> float:
    """The mixture width that makes the boundary tightest after `horizon` observations (the
    paper's eq. (12) with its Lambert-W approximation)."""
    two_log = -2.0 * math.log(alpha)
    return (two_log + math.log(two_log + 1.0)) / horizon


def mean_sequence(
    mean: float, variance: float, n: float, *, alpha: float, horizon: float = HORIZON_REQUESTS
) -> tuple[float, float]:
    """The (1 - alpha) asymptotic confidence sequence's bounds after `n` observations with sample
    `mean` and sample `variance`."""
    rho2 = _rho_squared(alpha, horizon)
    spread = n * variance * rho2 + 1.0
    radius = math.sqrt(2.0 * spread / (n * n * rho2) * math.log(math.sqrt(spread) / alpha))
    return mean - radius, mean + radius


def rate_difference(
    failed_c: float,
    n_c: float,
    failed_s: float,
    n_s: float,
    *,
    alpha: float,
    horizon: float = HORIZON_REQUESTS,
) -> Interval | None:
    """Candidate's failure rate minus stable's, with a (1 - alpha) confidence sequence; None when
    either track has no requests (nothing to compare).

    Example: 12 of 40 candidate requests failed, 0 of 160 stable ones: 0.30, bounds about
    0.06..0.54 at alpha 0.01, so a tolerance of 0.005 is exceeded: worse.
    """
    if n_c <= 0 or n_s <= 0:
        return None
    n = n_c + n_s
    rate_c, rate_s = failed_c / n_c, failed_s / n_s
    estimate = rate_c - rate_s
    # With pi estimated as n_c / n the IPW mean is the difference of the two rates (Hajek), whose
    # per-request asymptotic variance is the two-sample (Neyman) one, scaled to n requests. From a
    # handful of requests (1 failed of 1) the plain rates make it collapse to 0, so the variance
    # uses the Agresti-Caffo rates (one failure and one success added to each track), the usual
    # small-sample repair of the two-proportion interval, and never less than the pooled one.
    adj_c, adj_s = (failed_c + 1) / (n_c + 2), (failed_s + 1) / (n_s + 2)
    neyman = adj_c * (1 - adj_c) / (n_c + 2) + adj_s * (1 - adj_s) / (n_s + 2)
    pooled = (failed_c + failed_s) / n
    variance = n * max(neyman, pooled * (1 - pooled) * (1 / n_c + 1 / n_s))
    lower, upper = mean_sequence(estimate, variance, n, alpha=alpha, horizon=horizon)
    return Interval(estimate, max(lower, -1.0), min(upper, 1.0))  # a difference of two rates


@dataclass(frozen=True)
class Moments:
    """A track's observations as Prometheus can count them: how many, their sum, their squares'."""

    n: float
    total: float
    squares: float

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n > 0 else math.nan

    @property
    def variance(self) -> float:
        """The (biased) sample variance, never negative (a scrape mid-update)."""
        return max(self.squares / self.n - self.mean**2, 0.0) if self.n > 0 else 0.0


def mean_difference(cand: Moments, stable: Moments, *, alpha: float) -> Interval:
    """Candidate's mean minus stable's, with a (1 - alpha) confidence sequence: the rate
    difference's construction (an IPW difference per observation, the Robbins mixture) on
    observations standardised by their pooled spread, so the boundary is the same in any unit.

    The variance is never taken below the pooled one (both tracks alike), the small-sample repair
    `rate_difference` makes too. Needs observations on both tracks.
    """
    n = cand.n + stable.n
    estimate = cand.mean - stable.mean
    pooled = Moments(n, cand.total + stable.total, cand.squares + stable.squares).variance
    if pooled <= 0:
        return Interval(estimate, estimate, estimate)  # every observation the same: exact
    scale = math.sqrt(pooled)
    neyman = cand.variance / cand.n + stable.variance / stable.n
    variance = n * max(neyman, pooled * (1 / cand.n + 1 / stable.n)) / pooled
    lower, upper = mean_sequence(estimate / scale, variance, n, alpha=alpha)
    return Interval(estimate, lower * scale, upper * scale)


def mean_interval(own: Moments, *, alpha: float) -> tuple[float, float]:
    """One track's mean with a (1 - alpha) confidence sequence (standardised likewise)."""
    spread = math.sqrt(own.variance)
    if spread <= 0:
        return own.mean, own.mean
    lower, upper = mean_sequence(own.mean / spread, 1.0, own.n, alpha=alpha)
    return lower * spread, upper * spread


ALTERNATIVES = 32
"""Failure rates the guard rail's mixture spreads its weight over, evenly in log-odds from just
above the allowed rate to 99.9 %."""


def excess_evidence(failed: float, n: float, allowed: float) -> float:
    """Likelihood ratio of "the failure rate is above `allowed`" against "it is `allowed`", from
    `failed` of `n` requests: a mixture SPRT over `ALTERNATIVES` rates above `allowed`.

    Each term of the mixture is a likelihood ratio theta^f (1-theta)^(n-f) / q^f (1-q)^(n-f) with
    theta > q, whose expectation is at most 1 whenever the true rate is at most q, so the mixture
    is a nonnegative supermartingale under "no worse than allowed" and, by Ville's inequality,
    reaches 1/alpha with probability at most alpha, ever, however often it is looked at. Exact at
    every sample size: no normal approximation. `allowed` 0 (a 100 % threshold): any failure is
    infinite evidence, none is none.
    """
    if n <= 0:
        return 1.0
    if allowed <= 0:
        return math.inf if failed > 0 else 1.0
    if allowed >= 1:
        return 0.0
    lo, hi = math.log(allowed / (1 - allowed)), math.log(999.0)
    total = 0.0
    for j in range(1, ALTERNATIVES + 1):
        theta = 1 / (1 + math.exp(-(lo + (hi - lo) * j / ALTERNATIVES)))
        log_ratio = failed * math.log(theta / allowed) + (n - failed) * math.log((1 - theta) / (1 - allowed))
        total += math.exp(min(log_ratio, 700.0)) / ALTERNATIVES
    return total


def homogeneity_evidence(candidate: Sequence[float], stable: Sequence[float]) -> float:
    """Evidence that the candidate predicts classes in other shares than stable: a likelihood ratio
    of "each class has its own chance of landing on the candidate" against "one chance for all".

    Under "same shares" (and requests routed to the tracks at random), which track answered a
    prediction is a Bernoulli(pi) draw independent of its class. The numerator mixes, per class, over
    a uniform prior on that class's own chance; the denominator is the best single chance pi (the
    maximum likelihood, at least the true pi's likelihood), so the ratio is at most a nonnegative
    martingale under the null and reaches 1/alpha with probability at most alpha, ever (Ville).
    Exact at every sample size. `candidate` and `stable` are per-class counts, in the same order.
    """
    c_total, s_total = sum(candidate), sum(stable)
    if c_total <= 0 or s_total <= 0:
        return 1.0
    n = c_total + s_total
    log_null = c_total * math.log(c_total / n) + s_total * math.log(s_total / n)
    log_mix = sum(_log_beta(1 + c, 1 + s) for c, s in zip(candidate, stable, strict=True))
    return math.exp(min(log_mix - log_null, 700.0))


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def fixed_shares_evidence(counts: Sequence[float], fractions: Sequence[float], floor: float = 1e-4) -> float:
    """Evidence that values fall in other shares than `fractions` (a reference's): a likelihood
    ratio of a uniform Dirichlet mixture over all shares against the reference's multinomial.

    Each share vector's likelihood ratio against the reference has expectation 1 under the
    reference, so the mixture is a nonnegative martingale and reaches 1/alpha with probability at
    most alpha, ever (Ville): valid at every look and every sample size. Reference shares are
    floored at `floor` (the PSI's floor), so a bin the reference never saw is strong evidence, not
    infinite."""
    n = sum(counts)
    if n <= 0:
        return 1.0
    k = len(counts)
    shares = [max(f, floor) for f in fractions]
    total = sum(shares)
    log_null = sum(c * math.log(p / total) for c, p in zip(counts, shares, strict=True) if c > 0)
    log_mix = math.lgamma(k) + sum(math.lgamma(1 + c) for c in counts) - math.lgamma(k + n)
    return math.exp(min(log_mix - log_null, 700.0))
