"""interTokenLatencyP95 and outputTokensPerSecond against stable (`plan/latency.py`,
`judge_time_per_token`, `judge_tokens_per_second`): the latency shift test on the signals proxy's
per-answer histograms, one observation per answer, simulated on the proxy's own buckets
(`rollwise_serving.metrics`).

Answers are made token by token: each gets 1 + Poisson(60) tokens, its own speed (50 ms per token
times lognormal(0, 0.25): the server's load while it ran, which is what makes the gaps of one
stream move together) and gamma jitter per gap around it; its rate is its tokens over its time to
first token (lognormal around 300 ms) plus its gaps. Poisson answers, half to the candidate, 30
looks of 5 s, confidence 0.99, default tolerances (20 ms; 20 %).

Observed with the seeds below (`.venv/bin/python -m pytest tests/unit/test_token_checks.py -q`):
- A/A, 300 rollouts at 1 and at 10 answers/s: 0/300 failed, for both checks (stated: at most 1 %);
- harmless, 300 rollouts at 10 answers/s: 10 ms more per token, 0/300 failed; 10 % fewer
  tokens/s, 0/300; and 20 % fewer (the tolerance's very edge), 0/300;
- known bad, 100 rollouts: twice the time per token (so about half the tokens/s) caught in 100/100,
  at 10 answers/s by look 3 for each check (median 2), at 1 answer/s by look 29 (median 14;
  interTokenLatencyP95) and 19 (median 12; outputTokensPerSecond);
- per-gap instead of per-answer: at worseBy 0, the same A/A streams judged on the per-gap histogram
  (every gap counted as a draw) fail 38/100 rollouts, the per-answer one 0/100.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from rollwise.api.v1alpha1 import BuiltinMetric, MetricCheck
from rollwise.plan.analysis import COUNTED
from rollwise.plan.latency import TIME_PER_TOKEN, judge_time_per_token, judge_timing, judge_tokens_per_second
from rollwise.plan.measurement import Counts, Judged, Outcome
from rollwise_contract.metrics import LLM_OUTPUT_TOKENS_PER_SECOND, LLM_TIME_PER_OUTPUT_TOKEN
from rollwise_serving.metrics import (
    INTER_TOKEN_BUCKETS,
    OUTPUT_TOKENS_PER_SECOND_BUCKETS,
    TIME_PER_OUTPUT_TOKEN_BUCKETS,
)

from tests.unit.test_latency import cumulative

LOOKS, INTERVAL = 30, 5
TRIALS = 300
GAP_SECONDS = 0.05
"""Stable's typical time per token: a small model on a GPU, a tiny one on a CPU."""
JITTER_SHAPE = 4.0
"""Gamma shape of one gap around its answer's speed (coefficient of variation 0.5)."""

Judge = Callable[[MetricCheck, Counts], Judged]
Draw = Callable[[np.ndarray], np.ndarray]


def itl_check(**compare: Any) -> MetricCheck:
    doc: dict[str, Any] = {"name": "itl", "builtin": "interTokenLatencyP95", "threshold": {"max": 5}}
    if compare:
        doc["compare"] = compare
    return MetricCheck.model_validate(doc)


def tps_check(**compare: Any) -> MetricCheck:
    doc: dict[str, Any] = {"name": "tps", "builtin": "outputTokensPerSecond", "threshold": {"min": 0.1}}
    if compare:
        doc["compare"] = compare
    return MetricCheck.model_validate(doc)


def answers(
    rng: np.random.Generator, n: int, *, slower: float = 1.0, added: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`n` answers: each one's gaps, which answer each gap belongs to, and the answers' rates. The
    candidate's effect: every time (first token and gaps) times `slower`, plus `added` s per gap."""
    tokens = 1 + rng.poisson(60, n)
    speed = GAP_SECONDS * rng.lognormal(0.0, 0.25, n) * slower + added
    owner = np.repeat(np.arange(n), tokens - 1)
    gaps = rng.gamma(JITTER_SHAPE, 1 / JITTER_SHAPE, owner.size) * speed[owner]
    ttft = rng.lognormal(math.log(0.3), 0.4, n) * slower
    total = ttft + np.bincount(owner, weights=gaps, minlength=n)
    return gaps, owner, tokens / total


def mean_gaps(gaps: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """What the proxy observes per streamed answer: its gaps' mean, (last - first) / (chunks - 1)."""
    count = np.bincount(owner, minlength=n)
    return (np.bincount(owner, weights=gaps, minlength=n) / np.maximum(count, 1))[count > 0]


def per_answer_gap(rng: np.random.Generator, n: int, **effect: float) -> np.ndarray:
    gaps, owner, _ = answers(rng, n, **effect)
    return mean_gaps(gaps, owner, n)


def per_gap(rng: np.random.Generator, n: int, **effect: float) -> np.ndarray:
    return answers(rng, n, **effect)[0]


def per_answer_rate(rng: np.random.Generator, n: int, **effect: float) -> np.ndarray:
    return answers(rng, n, **effect)[2]


def first_fail(
    seed: int,
    *,
    rate: float,
    observe: Callable[..., np.ndarray],
    bounds: tuple[float, ...],
    judge: Callable[[Counts], Judged],
    trials: int = TRIALS,
    **effect: float,
) -> list[int | None]:
    """Per simulated rollout, the first look at which the real judge shows the candidate worse
    than stable (the comparison's lower bound above 0), or None."""
    rng = np.random.default_rng(seed)
    edges = np.asarray(bounds)
    out: list[int | None] = []
    for _ in range(trials):
        hist_c = np.zeros(len(bounds) + 1)
        hist_s = np.zeros(len(bounds) + 1)
        first = None
        for k in range(LOOKS):
            n = int(rng.poisson(rate * INTERVAL))
            n_c = int(rng.binomial(n, 0.5))
            c = observe(rng, n_c, **effect)
            s = observe(rng, n - n_c)
            hist_c += np.bincount(np.searchsorted(edges, c, side="left"), minlength=len(bounds) + 1)
            hist_s += np.bincount(np.searchsorted(edges, s, side="left"), minlength=len(bounds) + 1)
            judged = judge(cumulative(hist_c, hist_s, bounds))
            shown = judged.comparison is not None and (judged.comparison.lower or 0.0) > 0
            if shown:
                first = k + 1
                break
        out.append(first)
    return out


def itl(seed: int, *, rate: float, trials: int = TRIALS, **effect: float) -> list[int | None]:
    rule = itl_check()
    return first_fail(
        seed,
        rate=rate,
        observe=per_answer_gap,
        bounds=TIME_PER_OUTPUT_TOKEN_BUCKETS,
        judge=lambda counts: judge_time_per_token(rule, counts),
        trials=trials,
        **effect,
    )


def tps(seed: int, *, rate: float, trials: int = TRIALS, **effect: float) -> list[int | None]:
    rule = tps_check()
    return first_fail(
        seed,
        rate=rate,
        observe=per_answer_rate,
        bounds=OUTPUT_TOKENS_PER_SECOND_BUCKETS,
        judge=lambda counts: judge_tokens_per_second(rule, counts),
        trials=trials,
        **effect,
    )


def failed(firsts: list[int | None]) -> int:
    return sum(f is not None for f in firsts)


def test_the_checks_read_the_proxys_per_answer_histograms_with_their_defaults() -> None:
    assert COUNTED[BuiltinMetric.INTER_TOKEN_LATENCY_P95].series == f"{LLM_TIME_PER_OUTPUT_TOKEN}_bucket"
    assert COUNTED[BuiltinMetric.OUTPUT_TOKENS_PER_SECOND].series == f"{LLM_OUTPUT_TOKENS_PER_SECOND}_bucket"
    itl_rule, tps_rule = itl_check().comparison, tps_check().comparison
    assert itl_rule is not None and itl_rule.worse_by == 0.02  # seconds per token
    assert tps_rule is not None and tps_rule.worse_by == 0.2  # a fraction of stable's rate


def test_a_rate_tolerance_of_a_whole_rate_or_more_is_refused() -> None:
    with pytest.raises(
        ValidationError,
        match=r"for outputTokensPerSecond a fraction of stable's rate \(0.2: 20 % fewer tokens/s\); "
        r"use a value below 1",
    ):
        tps_check(worseBy=1.0)
    assert itl_check(worseBy=1.0).comparison is not None  # seconds: any value is a tolerance


@pytest.mark.parametrize("rate", [1, 10])
@pytest.mark.parametrize("check", [itl, tps], ids=["interTokenLatencyP95", "outputTokensPerSecond"])
def test_an_aa_candidate_is_failed_in_at_most_1_percent_of_rollouts(
    check: Callable[..., list[int | None]], rate: int
) -> None:
    """Confidence 0.99, 30 looks each: at most 1 % (2 % allows for 300 rollouts' own sampling
    error). Observed: 0/300 in each case."""
    assert failed(check(rate, rate=rate)) / TRIALS <= 0.02


@pytest.mark.parametrize(
    ("check", "seed", "effect"),
    [
        pytest.param(
            itl, 7, {"added": 0.01}, id="10 ms more per token is within interTokenLatencyP95's 20 ms"
        ),
        pytest.param(
            tps, 8, {"slower": 1.1}, id="10 % fewer tokens/s is within outputTokensPerSecond's 20 %"
        ),
        pytest.param(
            tps, 9, {"slower": 1.25}, id="20 % fewer tokens/s is the tolerance's edge, still at most 1 %"
        ),
    ],
)
def test_a_harmless_slowdown_is_not_failed_more_often_than_the_stated_rate(
    check: Callable[..., list[int | None]], seed: int, effect: dict[str, float]
) -> None:
    """At 10 answers/s. Observed: 0/300 for each."""
    assert failed(check(seed, rate=10, **effect)) / TRIALS <= 0.02


@pytest.mark.parametrize(
    ("check", "seed", "rate", "within"),
    [
        pytest.param(itl, 110, 10, 4, id="interTokenLatencyP95 at 10 answers a second within 4 looks"),
        pytest.param(tps, 111, 10, 4, id="outputTokensPerSecond at 10 answers a second within 4 looks"),
        pytest.param(itl, 112, 1, LOOKS, id="interTokenLatencyP95 at 1 answer a second within 30 looks"),
        pytest.param(tps, 113, 1, LOOKS, id="outputTokensPerSecond at 1 answer a second within 30 looks"),
    ],
)
def test_a_candidate_twice_as_slow_per_token_is_caught_in_every_rollout(
    check: Callable[..., list[int | None]], seed: int, rate: int, within: int
) -> None:
    """Every time doubled (about half the tokens/s): caught in all of 100 rollouts. Observed: at
    10 answers/s by look 3 (median 2) for each; at 1 answer/s by look 29 (median 14) and 19 (median
    12)."""
    firsts = check(seed, rate=rate, trials=100, slower=2.0)
    assert all(f is not None and f <= within for f in firsts), firsts


def test_a_faster_candidate_is_never_failed() -> None:
    """The direction: a candidate twice as fast passes both checks (lower is worse for tokens/s)."""
    assert failed(itl(21, rate=10, trials=50, slower=0.5)) == 0
    assert failed(tps(22, rate=10, trials=50, slower=0.5)) == 0


def test_the_per_gap_histogram_would_break_the_stated_rate() -> None:
    """Why the proxy exports one mean gap per answer: with worseBy 0 (any shift fails), A/A
    rollouts judged on every gap as a draw fail far more often than 1 % (observed 38/100), since
    the gaps of one stream share its speed; on one mean per answer they do not (observed 0/100)."""
    rule = itl_check(worseBy=0)
    gap_judge = lambda counts: judge_timing(rule, counts, TIME_PER_TOKEN)  # noqa: E731
    on_gaps = first_fail(1, rate=10, observe=per_gap, bounds=INTER_TOKEN_BUCKETS, judge=gap_judge, trials=100)
    on_answers = first_fail(
        1, rate=10, observe=per_answer_gap, bounds=TIME_PER_OUTPUT_TOKEN_BUCKETS, judge=gap_judge, trials=100
    )
    assert failed(on_gaps) >= 10, failed(on_gaps)
    assert failed(on_answers) <= 2, failed(on_answers)


def test_without_candidate_answers_it_is_no_data() -> None:
    for check, judge, bounds in (
        (itl_check(), judge_time_per_token, TIME_PER_OUTPUT_TOKEN_BUCKETS),
        (tps_check(), judge_tokens_per_second, OUTPUT_TOKENS_PER_SECOND_BUCKETS),
    ):
        zero = np.zeros(len(bounds) + 1)
        judged = judge(check, cumulative(zero, zero, bounds))
        assert judged.outcome is Outcome.INCONCLUSIVE and "no data" in judged.reason


def _hist(values: list[float], bounds: tuple[float, ...]) -> np.ndarray:
    return np.bincount(np.searchsorted(np.asarray(bounds), values), minlength=len(bounds) + 1).astype(float)


def test_the_rate_message_names_the_median_the_unit_and_the_side() -> None:
    """400 answers each: candidate all at 9 tokens/s (bucket 8..10], stable all at 15 (12.5..16]:
    at b = 10 the candidate has 100 % at or below it, stable 0 % at or below 12.5 (10 / 0.8)."""
    b = OUTPUT_TOKENS_PER_SECOND_BUCKETS
    judged = judge_tokens_per_second(
        tps_check(), cumulative(_hist([9.0] * 400, b), _hist([15.0] * 400, b), b)
    )
    assert judged.outcome is Outcome.FAIL
    assert judged.reason.startswith(
        "output tokens/s p50 9 tokens/s vs stable 14.2 tokens/s (+100.0 pp of answers at or below "
        "10 tokens/s than stable's at or below 12.5 tokens/s"
    )
    assert judged.reason.endswith("400 vs 400 answers): worse")
    assert judged.comparison is not None
    assert judged.comparison.rule.endswith("at or below b / (1 - 0.2)")


def test_a_rate_shown_below_the_minimum_fails_and_one_above_the_maximum_is_read_as_measured() -> None:
    b = OUTPUT_TOKENS_PER_SECOND_BUCKETS
    same = _hist([15.0] * 400, b)
    below = judge_tokens_per_second(tps_check(), cumulative(_hist([4.5] * 200, b), _hist([4.5] * 200, b), b))
    assert below.outcome is Outcome.PASS  # min 0.1: far above it
    slow = MetricCheck.model_validate(
        {"name": "tps", "builtin": "outputTokensPerSecond", "threshold": {"min": 10}}
    )
    judged = judge_tokens_per_second(slow, cumulative(_hist([4.5] * 200, b), _hist([4.5] * 200, b), b))
    assert judged.outcome is Outcome.FAIL
    assert "100.0 % of 200 answers at or below 10 tokens/s" in judged.reason
    few = judge_tokens_per_second(slow, cumulative(_hist([4.5] * 2, b), _hist([4.5] * 2, b), b))
    assert few.outcome is Outcome.PASS, few.reason  # the median of 2 answers shows nothing yet
    capped = MetricCheck.model_validate(
        {"name": "tps", "builtin": "outputTokensPerSecond", "threshold": {"max": 10}}
    )
    assert judge_tokens_per_second(capped, cumulative(same, same, b)).outcome is Outcome.FAIL
