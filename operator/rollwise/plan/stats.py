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


def share_bounds(count: float, n: float, *, alpha: float) -> tuple[float, float]:
    """A (1 - alpha) confidence sequence for one share, exact at every sample size: the shares p
    whose Beta(1, 1)-mixture likelihood ratio against p stays below 1 / alpha (Robbins' mixture
    martingale; by Ville's inequality the true share leaves it with probability at most alpha,
    ever). The set is an interval around count / n, found by bisection on each side."""
    if n <= 0:
        return 0.0, 1.0
    bar = math.log(1 / alpha)
    log_mix = math.lgamma(1 + count) + math.lgamma(1 + n - count) - math.lgamma(2 + n)

    def log_ratio(p: float) -> float:
        p = min(max(p, 1e-300), 1 - 1e-16)
        return log_mix - count * math.log(p) - (n - count) * math.log1p(-p)

    def edge(inside: float, outside: float) -> float:
        if log_ratio(outside) < bar:
            return outside
        for _ in range(32):  # to 2^-32 of the unit interval
            mid = (inside + outside) / 2
            inside, outside = (mid, outside) if log_ratio(mid) < bar else (inside, mid)
        return inside

    centre = count / n
    return edge(centre, 0.0), edge(centre, 1.0)


def psi_lower_bound(
    candidate: Sequence[float],
    base: Sequence[float],
    *,
    alpha: float,
    base_fixed: bool = False,
    floor: float = 1e-4,
) -> float:
    """A lower confidence bound on the PSI of the candidate's shares against the base's, valid at
    every look: each share gets a confidence sequence at alpha / (number of intervals); the bound
    is the larger of each bin's PSI term minimised over its box and Pinsker's 4 TV^2 with the
    smallest total variation the boxes allow. With probability 1 - alpha every true share is
    in its box at every look, so the true PSI is at least this bound: "shown above the threshold"
    then fails a candidate whose true PSI is at or below it in at most alpha of rollouts, however
    close to the threshold it is. `base_fixed`: `base` are a reference's shares, known exactly."""
    n_c = sum(candidate)
    n_b = sum(base)
    k = len(candidate)
    intervals = k if base_fixed else 2 * k
    terms, gaps = 0.0, 0.0
    for c, b in zip(candidate, base, strict=True):
        a_lo, a_hi = share_bounds(c, n_c, alpha=alpha / intervals)
        if base_fixed:
            b_lo = b_hi = b / n_b if n_b > 0 else 0.0
        else:
            b_lo, b_hi = share_bounds(b, n_b, alpha=alpha / intervals)
        gaps += max(a_lo - b_hi, b_lo - a_hi, 0.0)
        a_lo, a_hi, b_lo, b_hi = (max(x, floor) for x in (a_lo, a_hi, b_lo, b_hi))
        if a_lo > b_hi:
            terms += (a_lo - b_hi) * math.log(a_lo / b_hi)
        elif b_lo > a_hi:
            terms += (b_lo - a_hi) * math.log(b_lo / a_hi)
    # The PSI is the symmetric Kullback-Leibler divergence, so by Pinsker's inequality it is at
    # least 4 TV^2, TV being half the L1 distance: far tighter than the per-bin terms when a share
    # near 0 is uncertain (its log ratio is then unbounded below).
    return max(terms, 4 * (gaps / 2) ** 2)
