"""latencyP99 against stable (`plan/latency.py`): its false-fail rate on simulated A/A rollouts and at
the tolerance's edge, how soon known slowdowns are caught, its monotonicity, and the bucket edge
cases (empty buckets, +Inf, one track without traffic)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rollwise.api.v1alpha1 import MetricCheck
from rollwise.plan.latency import Histogram, judge_latency
from rollwise.plan.measurement import Counts, Outcome
from rollwise.plan.names import Track

BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""The serving image's latency buckets (rollwise_serving.metrics.LATENCY_BUCKETS)."""

LOOKS, INTERVAL = 60, 5


def check(**compare: Any) -> MetricCheck:
    doc: dict[str, Any] = {"name": "latency", "builtin": "latencyP99", "threshold": {"max": 0.25}}
    if compare:
        doc["compare"] = compare
    return MetricCheck.model_validate(doc)


def counts(candidate: list[float], stable: list[float]) -> Counts:
    """Cumulative bucket counts of two tracks, as Prometheus' `le` labels read them."""
    values: dict[tuple[str, ...], float] = {}
    for track, latencies in ((Track.CANDIDATE, candidate), (Track.STABLE, stable)):
        arr = np.asarray(latencies, dtype=float)
        for b in BOUNDS:
            values[(str(track), repr(b))] = float(np.sum(arr <= b))
        values[(str(track), "+Inf")] = float(len(arr))
    return Counts(values)


def _latencies(rng: np.random.Generator, n: int, shift: float) -> np.ndarray:
    """A model server's latencies: lognormal around 4 ms, 2 % of requests a slow path of
    30-300 ms (a cache miss, a GC pause), plus `shift` seconds."""
    body = rng.lognormal(math.log(0.004), 0.5, n)
    slow = rng.random(n) < 0.02
    body[slow] = rng.uniform(0.03, 0.3, int(slow.sum()))
    return body + shift


def _first_fail(
    rng: np.random.Generator, *, rate: float, share: float, shift: float, trials: int, looks: int = LOOKS,
    rule: MetricCheck | None = None,
) -> list[int | None]:  # fmt: skip
    """Per simulated rollout, the first look (1-based) at which the comparison fails the candidate,
    or None. Poisson arrivals, each answered by the candidate with probability `share`; the bucket
    counts accumulate from the start and are judged by the real `judge_latency` at every look."""
    rule = rule or check()
    edges = np.asarray(BOUNDS)
    out: list[int | None] = []
    for _ in range(trials):
        n = rng.poisson(rate * INTERVAL, looks)
        n_c = rng.binomial(n, share)
        per_look = []
        for k in range(looks):
            c = _latencies(rng, int(n_c[k]), shift)
            s = _latencies(rng, int(n[k] - n_c[k]), 0.0)
            per_look.append((np.searchsorted(edges, c, side="left"), np.searchsorted(edges, s, side="left")))
        hist_c = np.zeros(len(BOUNDS) + 1)
        hist_s = np.zeros(len(BOUNDS) + 1)
        first = None
        for k, (c_idx, s_idx) in enumerate(per_look):
            hist_c += np.bincount(c_idx, minlength=len(BOUNDS) + 1)
            hist_s += np.bincount(s_idx, minlength=len(BOUNDS) + 1)
            judged = judge_latency(rule, cumulative(hist_c, hist_s))
            comparison = judged.comparison
            if comparison is not None and comparison.lower is not None and comparison.lower > 0:
                first = k + 1
                break
        out.append(first)
    return out


def cumulative(hist_c: np.ndarray, hist_s: np.ndarray, bounds: tuple[float, ...] = BOUNDS) -> Counts:
    """Two tracks' per-bucket counts (the last one +Inf) as Prometheus' cumulative `le` series."""
    values: dict[tuple[str, ...], float] = {}
    for track, hist in ((Track.CANDIDATE, hist_c), (Track.STABLE, hist_s)):
        cum = np.cumsum(hist)
        for i, b in enumerate(bounds):
            values[(str(track), repr(b))] = float(cum[i])
        values[(str(track), "+Inf")] = float(cum[-1])
    return Counts(values)


@pytest.mark.parametrize("rate", [2, 20, 200])
@pytest.mark.parametrize("share", [0.2, 0.5])
def test_an_aa_candidate_is_called_slower_in_at_most_1_percent_of_rollouts(rate: int, share: float) -> None:
    """Same latencies on both tracks, 60 looks: the comparison fails at most 1 % of rollouts at
    confidence 0.99 (1.5 % allows for 400 rollouts' own sampling error)."""
    rng = np.random.default_rng(rate * 10 + int(share * 10))
    firsts = _first_fail(
        rng, rate=rate, share=share, shift=0.0, trials=400, looks=30 if rate == 200 else LOOKS
    )
    assert sum(f is not None for f in firsts) / len(firsts) <= 0.015


def test_a_slowdown_within_the_tolerance_is_not_failed_more_often_than_the_stated_rate() -> None:
    """+20 ms with the default 25 ms tolerance: the null's edge, still at most the stated rate."""
    rng = np.random.default_rng(7)
    firsts = _first_fail(rng, rate=20, share=0.5, shift=0.020, trials=400)
    assert sum(f is not None for f in firsts) / len(firsts) <= 0.015


@pytest.mark.parametrize(
    ("shift", "rate", "share", "within_looks", "rule"),
    [
        pytest.param(0.150, 20, 0.2, 1, None, id="+150 ms at 20/s, 20 % of traffic: at the 1st look (5 s)"),
        pytest.param(0.050, 20, 0.5, 2, None, id="+50 ms at 20/s, 50 % of traffic: by the 2nd look (10 s)"),
        pytest.param(
            0.020,
            20,
            0.5,
            3,
            check(worseBy=0.01),
            id="+20 ms at 20/s against a 10 ms tolerance: by the 3rd look",
        ),
    ],
)
def test_a_slower_candidate_is_caught_in_time(
    shift: float, rate: int, share: float, within_looks: int, rule: MetricCheck | None
) -> None:
    """Known slowdowns: caught in 95 % of 200 rollouts within the stated looks."""
    rng = np.random.default_rng(3)
    firsts = _first_fail(rng, rate=rate, share=share, shift=shift, trials=200, looks=within_looks, rule=rule)
    caught = [f for f in firsts if f is not None]
    assert len(caught) / len(firsts) >= 0.95, firsts


def test_the_p99_is_interpolated_in_its_bucket_as_histogram_quantile_does() -> None:
    # 100 requests: 50 at or below 5 ms, 49 in (5 ms, 10 ms], 1 in (10 ms, 25 ms].
    h = Histogram.of(counts([0.004] * 50 + [0.008] * 49 + [0.02], []), Track.CANDIDATE, BOUNDS)
    assert h.quantile(0.99) == pytest.approx(0.010)
    assert h.quantile(0.995) == pytest.approx(0.0175)
    assert h.quantile(0.5) == pytest.approx(0.005)


def test_requests_beyond_the_last_bucket_read_as_its_bound_and_fail_the_guard_rail() -> None:
    judged = judge_latency(check(), counts([20.0] * 30, [0.004] * 100))
    assert judged.outcome is Outcome.FAIL and judged.value == 10.0
    assert "outside <= 0.25" in judged.reason and "worse" in judged.reason


def test_empty_buckets_and_missing_boundaries_are_no_requests() -> None:
    only_inf = Counts({("candidate", "+Inf"): 0.0, ("stable", "+Inf"): 0.0})
    assert judge_latency(check(), only_inf).outcome is Outcome.INCONCLUSIVE
    assert judge_latency(check(), Counts({})).outcome is Outcome.INCONCLUSIVE


def test_without_candidate_traffic_it_is_no_data_and_without_stable_traffic_only_the_rail() -> None:
    assert judge_latency(check(), counts([], [0.004] * 50)).outcome is Outcome.INCONCLUSIVE
    alone = judge_latency(check(), counts([0.2] * 50, []))
    assert alone.outcome is Outcome.PASS and alone.comparison is None  # 0.2 s is within max 0.25
    assert judge_latency(check(), counts([0.3] * 50, [])).outcome is Outcome.FAIL


def test_a_candidate_50_ms_slower_than_a_fast_stable_fails_though_its_p99_is_within_the_threshold() -> None:
    rng = np.random.default_rng(1)
    fast = rng.lognormal(math.log(0.004), 0.5, 160)  # no slow path: a p99 well below 0.25 s
    judged = judge_latency(check(), counts(list(fast[:80] + 0.05), list(fast[80:])))
    assert judged.outcome is Outcome.FAIL and judged.value is not None and judged.value <= 0.25
    assert judged.comparison is not None and judged.comparison.lower is not None
    assert judged.comparison.lower > 0
    assert judged.reason.startswith("latency p99 ") and "vs stable" in judged.reason


def test_comparison_off_leaves_the_threshold_alone() -> None:
    judged = judge_latency(check(enabled=False), counts([0.1] * 50, [0.004] * 50))
    assert judged.outcome is Outcome.PASS and judged.comparison is None


@given(
    st.lists(st.integers(0, len(BOUNDS)), min_size=1, max_size=60),
    st.lists(st.integers(0, len(BOUNDS)), min_size=1, max_size=60),
    st.integers(0, 59),
)
def test_a_slower_candidate_never_turns_a_fail_into_a_pass(
    cand: list[int], stable: list[int], which: int
) -> None:
    """Moving one candidate request to a slower bucket never makes a failing candidate pass."""
    edges = [*BOUNDS, 20.0]
    before = [edges[i] for i in cand]
    after = list(before)
    i = which % len(after)
    after[i] = edges[min(cand[i] + 1, len(BOUNDS))]
    s = [edges[i] for i in stable]
    if judge_latency(check(), counts(before, s)).outcome is Outcome.FAIL:
        assert judge_latency(check(), counts(after, s)).outcome is Outcome.FAIL


def test_the_guard_rail_fails_a_p99_above_max_only_when_more_than_1_percent_are_shown_slower() -> None:
    """A p99 from 20 requests is their slowest one: one slow request of 20 is no proof that more
    than 1 % are slower than max; 10 % of 200 are."""
    one_slow = judge_latency(check(enabled=False), counts([0.004] * 19 + [0.4], []))
    assert one_slow.value is not None and one_slow.value > 0.25 and one_slow.outcome is Outcome.PASS
    many = judge_latency(check(enabled=False), counts([0.004] * 180 + [0.4] * 20, []))
    assert many.outcome is Outcome.FAIL
    assert "10.0 % of 200 requests above 0.25 s" in many.reason


def test_an_aa_candidate_at_high_traffic_is_shown_not_slower() -> None:
    """What `maxDurationSeconds` passes on: 10 000 requests a track of the same latencies bound
    the candidate's excess of slow requests below 1 point at every boundary (5 000 do not yet)."""
    rng = np.random.default_rng(2)
    judged = judge_latency(
        check(), counts(list(_latencies(rng, 10_000, 0.0)), list(_latencies(rng, 10_000, 0.0)))
    )
    assert judged.outcome is Outcome.PASS and judged.not_worse and judged.reason.endswith(": not worse")
    few = judge_latency(check(), counts(list(_latencies(rng, 100, 0.0)), list(_latencies(rng, 100, 0.0))))
    assert few.outcome is Outcome.PASS and not few.not_worse and few.reason.endswith(": undecided")
