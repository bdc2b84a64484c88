"""timeToFirstTokenP95 against stable (`plan/latency.py`, `judge_first_token`): the latency shift
test on the time-to-first-token histograms the signals proxy exports for an OpenAI-compatible
server. Simulated on its own buckets (`rollwise_serving.metrics.FIRST_TOKEN_BUCKETS`): A/A rollouts
fail at most the stated 1 %, a candidate 3× slower to its first token is caught within a few looks,
and one slower by less than the default tolerance (100 ms) is not failed."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from rollwise.api.v1alpha1 import BuiltinMetric, MetricCheck
from rollwise.plan.analysis import COUNTED
from rollwise.plan.latency import judge_first_token
from rollwise.plan.measurement import Counts, Outcome
from rollwise_contract.metrics import LLM_TIME_TO_FIRST_TOKEN
from rollwise_serving.metrics import FIRST_TOKEN_BUCKETS

from tests.unit.test_latency import cumulative

BOUNDS = FIRST_TOKEN_BUCKETS
LOOKS, INTERVAL = 30, 5
TRIALS = 300


def check(**compare: Any) -> MetricCheck:
    doc: dict[str, Any] = {"name": "ttft", "builtin": "timeToFirstTokenP95", "threshold": {"max": 5}}
    if compare:
        doc["compare"] = compare
    return MetricCheck.model_validate(doc)


def _ttft(rng: np.random.Generator, n: int, scale: float, delay: float) -> np.ndarray:
    """A small LLM on a CPU: lognormal around 300 ms (prompt processing), times `scale`, plus `delay`."""
    return rng.lognormal(math.log(0.3), 0.4, n) * scale + delay


def _counts(hist_c: np.ndarray, hist_s: np.ndarray) -> Counts:
    return cumulative(hist_c, hist_s, BOUNDS)


def first_fail(
    seed: int, *, rate: float, scale: float = 1.0, delay: float = 0.0, trials: int = TRIALS
) -> list[int | None]:
    """Per simulated rollout (Poisson answers, half to the candidate), the first look at which the
    real judge shows the candidate slower than stable, or None."""
    rng = np.random.default_rng(seed)
    edges = np.asarray(BOUNDS)
    rule = check()
    out: list[int | None] = []
    for _ in range(trials):
        hist_c = np.zeros(len(BOUNDS) + 1)
        hist_s = np.zeros(len(BOUNDS) + 1)
        first = None
        for k in range(LOOKS):
            n = int(rng.poisson(rate * INTERVAL))
            n_c = int(rng.binomial(n, 0.5))
            c = _ttft(rng, n_c, scale, delay)
            s = _ttft(rng, n - n_c, 1.0, 0.0)
            hist_c += np.bincount(np.searchsorted(edges, c, side="left"), minlength=len(BOUNDS) + 1)
            hist_s += np.bincount(np.searchsorted(edges, s, side="left"), minlength=len(BOUNDS) + 1)
            judged = judge_first_token(rule, _counts(hist_c, hist_s))
            if (
                judged.comparison is not None
                and judged.comparison.lower is not None
                and judged.comparison.lower > 0
            ):
                first = k + 1
                break
        out.append(first)
    return out


def test_the_check_reads_the_proxys_first_token_histogram() -> None:
    assert COUNTED[BuiltinMetric.TIME_TO_FIRST_TOKEN_P95].series == f"{LLM_TIME_TO_FIRST_TOKEN}_bucket"
    rule = check().comparison
    assert rule is not None and rule.worse_by == 0.1  # the API's default, in seconds


@pytest.mark.parametrize("rate", [1, 10])
def test_an_aa_candidate_is_called_slower_in_at_most_1_percent_of_rollouts(rate: int) -> None:
    """Confidence 0.99, 30 looks each: at most 1 % of A/A rollouts fail (2 % allows for 300
    rollouts' own sampling error)."""
    fails = [f for f in first_fail(rate, rate=rate) if f is not None]
    assert len(fails) / TRIALS <= 0.02, len(fails)


def test_a_candidate_slower_by_less_than_the_tolerance_is_not_failed_more_often() -> None:
    fails = [f for f in first_fail(7, rate=10, delay=0.05) if f is not None]
    assert len(fails) / TRIALS <= 0.02, len(fails)


def test_a_candidate_3x_slower_to_its_first_token_is_caught_within_six_looks_at_10_answers_a_second() -> None:
    """The issue's case (a larger context or an added delay: 3× stable's TTFT) at 10 answers/s, half
    to the candidate: caught in every one of 100 rollouts within 6 looks (30 s); measured: median 3,
    95th percentile 5. At 1 answer/s only about half are caught within 30 looks (docs/analysis.md):
    the Bonferroni over 13 buckets needs tens of answers per track."""
    firsts = first_fail(110, rate=10, scale=3.0, trials=100)
    assert all(f is not None and f <= 6 for f in firsts), firsts


def test_without_candidate_answers_it_is_no_data() -> None:
    zero = np.zeros(len(BOUNDS) + 1)
    judged = judge_first_token(check(), _counts(zero, zero))
    assert judged.outcome is Outcome.INCONCLUSIVE and "no answers" in judged.reason


def test_the_message_names_the_quantile_and_the_answers() -> None:
    rng = np.random.default_rng(1)
    edges = np.asarray(BOUNDS)
    c = np.bincount(np.searchsorted(edges, _ttft(rng, 500, 3.0, 0.0)), minlength=len(BOUNDS) + 1)
    s = np.bincount(np.searchsorted(edges, _ttft(rng, 500, 1.0, 0.0)), minlength=len(BOUNDS) + 1)
    judged = judge_first_token(check(), _counts(c.astype(float), s.astype(float)))
    assert judged.outcome is Outcome.FAIL
    assert judged.reason.startswith("time to first token p95 ")
    assert "500 vs 500 answers): worse" in judged.reason
