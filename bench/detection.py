"""How fast each judge rolls a bad candidate back, and how often it rolls a good one back (issue 14).

    .venv/bin/python bench/detection.py                    # 1 000 A/A rollouts a cell (about 10 min)
    .venv/bin/python bench/detection.py --aa 200 --bad 50  # a quick look

Side by side on the same simulated traffic: requests arrive as a Poisson stream at 2, 20 and 200
per second; each second the router sends each request to the candidate with the step's weight, and
each request fails with its track's failure probability. Prometheus is modelled by what it can see:
counters scraped every `--scrape` seconds at a random phase, so a look sees the requests up to its
last scrape (the "no data yet" of a new pod is in it). Judges, each with its own documented setup:

- `rollwise`: this repository's judge, the real code (`plan.analysis.record` on `Counts`):
  the README's canary (setWeight 20, analysis, setWeight 60, analysis; interval 5 s, count 3,
  failureLimit 0, inconclusiveLimit 0, minSampleCount 5), successRate >= 99 as the guard rail and
  the comparison with stable at its defaults (worseBy 0.5 points, confidence 0.99).
- `rollwise-before`: the judge before issue 14, the same spec: successRate >= 99 on each 5 s
  interval alone (client errors beyond stable's share and noise), a thin interval inconclusive.
- `flagger`: Flagger's defaults: a check every 60 s of request-success-rate >= 99 over the last
  60 s, threshold 1 (the first failed check rolls back), no data a failed check; stepWeight
  schedule 20 -> 60 -> promote, one interval each.
- `argo`: Argo Rollouts' documented background analysis (docs/features/analysis.md): the
  success-rate AnalysisTemplate (interval 5m, `irate(...[5m])`, successCondition
  result[0] >= 0.95, failureLimit 3) from step 2 of setWeight 20/40/60/80 with 10 min pauses.

Printed per judge and traffic level: A/A false rollbacks (the same failure rate on both tracks,
0.1 %: a real service's background noise), rollouts left paused, time to promote the A/A
candidate (median), and for candidates failing 30 %, 5 % and 1 % of requests the share rolled back
and the median time from the candidate's first request to the rollback. Latency and class-share
scenarios are not in it: those checks are still per-interval thresholds (issue 14, next part).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from rollwise.api.v1alpha1 import AnalysisSpec, Verdict
from rollwise.plan.analysis import SAMPLES, Measured, QueryRequest, next_due, record, start, taken
from rollwise.plan.compare import client_error_excess
from rollwise.plan.measurement import Counts, Value

HORIZON = 2500
"""Seconds simulated per rollout: Argo's documented schedule takes 40 minutes."""
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Traffic:
    """One rollout's requests per second and each track's failure probability; each judge applies
    its own weights to them."""

    arrivals: np.ndarray
    p_c: float
    p_s: float


@dataclass
class Result:
    outcome: str  # "promoted", "rolled back", "paused", "running"
    seconds: float


def simulate(rng: np.random.Generator, rate: float, p_c: float, p_s: float) -> Traffic:
    return Traffic(rng.poisson(rate, HORIZON), p_c, p_s)


@dataclass
class Split:
    """A judge's view of one rollout: per second, requests and failures per track, as scraped."""

    n_c: np.ndarray
    f_c: np.ndarray
    n_s: np.ndarray
    f_s: np.ndarray
    scrape: float
    phase: float

    @classmethod
    def of(cls, traffic: Traffic, weights: np.ndarray, rng: np.random.Generator, scrape: float) -> Split:
        n_c = rng.binomial(traffic.arrivals, weights)
        n_s = traffic.arrivals - n_c
        f_c, f_s = rng.binomial(n_c, traffic.p_c), rng.binomial(n_s, traffic.p_s)
        return cls(n_c, f_c, n_s, f_s, scrape, float(rng.random() * scrape))

    def seen(self, t: float) -> int:
        """Seconds of traffic Prometheus holds at time t (up to its last scrape)."""
        last = self.phase + np.floor((t - self.phase) / self.scrape) * self.scrape
        return max(0, int(last))

    def between(self, a: float, b: float) -> tuple[float, float, float, float]:
        """(n_c, f_c, n_s, f_s) Prometheus shows between times a and b (each at its last scrape)."""
        i, j = self.seen(a), self.seen(b)
        n_c, f_c, n_s, f_s = (float(x[i:j].sum()) for x in (self.n_c, self.f_c, self.n_s, self.f_s))
        return n_c, f_c, n_s, f_s


def schedule(*steps: tuple[float, float]) -> np.ndarray:
    """Per-second candidate weights from (start second, weight) pairs."""
    w = np.zeros(HORIZON)
    for at, weight in steps:
        w[int(at) :] = weight
    return w


# ---------------------------------------------------------------------------------------------
# Judges

SPEC = AnalysisSpec.model_validate(
    {
        "intervalSeconds": 5, "count": 3, "failureLimit": 0, "inconclusiveLimit": 0, "minSampleCount": 5,
        "metrics": [{"name": "success-rate", "builtin": "successRate", "threshold": {"min": 99}}],
    }
)  # fmt: skip


def _look(split: Split, since: float, t: float, index: int, k: int, due: datetime) -> list[Measured]:
    """What the operator's queries would answer at a look: counts since the analysis started, and
    the candidate's requests over the last interval (the minSampleCount gate)."""
    n_c, f_c, n_s, f_s = split.between(since, t)
    counts = Counts(
        {("candidate", "success"): n_c - f_c, ("candidate", "server_error"): f_c,
         ("stable", "success"): n_s - f_s, ("stable", "server_error"): f_s}
    )  # fmt: skip
    thin = split.between(t - SPEC.interval_seconds, t)[0]
    return [
        Measured(QueryRequest(SAMPLES, k, index, "", due), Value(thin)),
        Measured(QueryRequest("success-rate", k, index, "", due, ("track", "outcome")), counts),
    ]


def rollwise(traffic: Traffic, rng: np.random.Generator, scrape: float) -> Result:
    """The real analysis code (`record`), two analysis steps at 20 % and 60 %, the second starting
    at the look that passed the first; looks when `next_due` says."""
    step_start, t = 0.0, 0.0
    phase = float(rng.random() * scrape)
    for index, weight in enumerate((0.2, 0.6)):
        split = Split.of(traffic, schedule((0, weight)), rng, scrape)  # read only from step_start on
        split.phase = phase
        analysis = start(SPEC, step=index, now=T0 + timedelta(seconds=step_start))
        while analysis.verdict is Verdict.RUNNING:
            due = next_due(SPEC, analysis)
            t = (due - T0).total_seconds()
            if t >= HORIZON:
                return Result("running", t)
            answers = _look(split, step_start, t, index, taken(analysis), due)
            analysis = record(SPEC, analysis, answers, step=index, count=None)
        if analysis.verdict is Verdict.FAILED:
            return Result("rolled back", t)
        if analysis.verdict is Verdict.INCONCLUSIVE:
            return Result("paused", t)
        step_start = t
    return Result("promoted", t)


def rollwise_before(traffic: Traffic, rng: np.random.Generator, scrape: float) -> Result:
    """The per-interval threshold judge this repository had: each 5 s interval alone."""
    step_start = 0.0
    phase = float(rng.random() * scrape)
    for weight in (0.2, 0.6):
        split = Split.of(traffic, schedule((0, weight)), rng, scrape)
        split.phase = phase
        passed, t = 0, step_start
        while passed < SPEC.count:
            t += SPEC.interval_seconds
            if t >= HORIZON:
                return Result("running", t)
            n_c, f_c, n_s, _ = split.between(t - SPEC.interval_seconds, t)
            if n_c < SPEC.min_sample_count:
                return Result("paused", t)  # inconclusiveLimit 0: a human is asked
            excess = client_error_excess(0, n_c, 0, n_s)
            if 100 * (n_c - f_c) / (n_c + excess) < 99:
                return Result("rolled back", t)
            passed += 1
        step_start = t
    return Result("promoted", step_start)


def flagger(traffic: Traffic, rng: np.random.Generator, scrape: float) -> Result:
    """Flagger's defaults: every 60 s, success rate over the last 60 s >= 99; threshold 1."""
    split = Split.of(traffic, schedule((0, 0.2), (60, 0.6)), rng, scrape)
    for t in (60.0, 120.0):
        n_c, f_c, _, _ = split.between(t - 60, t)
        if n_c <= 0 or 100 * (n_c - f_c) / n_c < 99:
            return Result("rolled back", t)
    return Result("promoted", 120.0)


def argo(traffic: Traffic, rng: np.random.Generator, scrape: float) -> Result:
    """Argo's documented background analysis: steps setWeight 20/40/60/80, each followed by a 10 min
    pause; the success-rate template starts at step 2 (setWeight 40), measures at once and every
    5 min `sum(irate(ok[5m])) / sum(irate(all[5m])) >= 0.95` (irate: the last two samples, so the
    last scrape interval), failureLimit 3 (the 4th failed measurement aborts); NaN (no request in
    that interval) fails the condition. Promoted when the steps end."""
    split = Split.of(traffic, schedule((0, 0.2), (600, 0.4), (1200, 0.6), (1800, 0.8)), rng, scrape)
    failures = 0
    for t in np.arange(600.0, 2400.0, 300.0):
        n_c, f_c, _, _ = split.between(t - scrape, t)
        if not (n_c > 0 and (n_c - f_c) / n_c >= 0.95):
            failures += 1
            if failures > 3:
                return Result("rolled back", float(t))
    return Result("promoted", 2400.0)


JUDGES: dict[str, Callable[[Traffic, np.random.Generator, float], Result]] = {
    "rollwise": rollwise,
    "rollwise-before": rollwise_before,
    "flagger": flagger,
    "argo": argo,
}


def median(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} s" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--aa", type=int, default=1000, help="A/A rollouts per judge and rate")
    parser.add_argument("--bad", type=int, default=200, help="rollouts per bad candidate, judge and rate")
    parser.add_argument("--scrape", type=float, default=2.0, help="Prometheus scrape interval, seconds")
    parser.add_argument("--rates", default="2,20,200")
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    background = 0.001
    print(f"scrape {args.scrape:g} s; A/A: {args.aa} rollouts, bad: {args.bad}; background failures 0.1 %")
    header = f"{'rate/s':>6} {'judge':<16} {'A/A rolled back':>15} {'paused':>7} {'promoted in':>11}"
    for p in (0.3, 0.05, 0.01):
        header += f" {f'{p:.0%} caught':>10} {'in':>6}"
    print(header)
    for rate in (float(r) for r in args.rates.split(",")):
        for name, judge in JUDGES.items():
            aa = [
                judge(simulate(rng, rate, background, background), rng, args.scrape) for _ in range(args.aa)
            ]
            back = sum(r.outcome == "rolled back" for r in aa) / len(aa)
            paused = sum(r.outcome == "paused" for r in aa) / len(aa)
            promoted = [r.seconds for r in aa if r.outcome == "promoted"]
            row = f"{rate:>6g} {name:<16} {back:>15.1%} {paused:>7.1%} {median(promoted):>11}"
            for p in (0.3, 0.05, 0.01):
                bad = [judge(simulate(rng, rate, p, background), rng, args.scrape) for _ in range(args.bad)]
                caught = [r.seconds for r in bad if r.outcome == "rolled back"]
                row += f" {len(caught) / len(bad):>10.0%} {median(caught):>6}"
            print(row, flush=True)


if __name__ == "__main__":
    main()
