"""How fast each judge rolls a bad candidate back, and how often it rolls a good one back (issue 14).

    .venv/bin/python bench/detection.py                    # 1 000 A/A rollouts a cell (about 11 min)
    .venv/bin/python bench/detection.py --aa 200 --bad 50  # a quick look

Side by side on the same simulated traffic: requests arrive as a Poisson stream at 2, 20 and 200
per second; each second the router sends each request to the candidate with the step's weight;
each request fails with its track's failure probability, lands in a latency bucket by its track's
latency distribution (about 4 ms, 2 % on a 30-300 ms slow path, plus the candidate's shift) and,
when answered, predicts a class by its track's class shares. Prometheus is modelled by what it can
see: counters scraped every `--scrape` seconds at a random phase, so a look sees the requests up to
its last scrape (the "no data yet" of a new pod is in it). Judges, each with its own documented
setup:

- `rollwise`: this repository's judge, the real code (`plan.analysis.record` on `Counts`):
  the README's canary (setWeight 20, analysis, setWeight 60, analysis; interval 5 s, count 3,
  failureLimit 0, inconclusiveLimit 0, minSampleCount 5), successRate >= 99, latencyP99 <= 0.25
  and predictionDrift <= 0.2, each compared with stable at its defaults.
- `rollwise-evidence`: the same with `maxDurationSeconds: 300` (the evidence ends each step).
- `rollwise-before`: the judge before issue 14, the same spec on each 5 s interval alone (success
  rate with client errors beyond stable's share and noise, `histogram_quantile` p99, PSI).
- `flagger`: Flagger's defaults: a check every 60 s of request-success-rate >= 99 and
  request-duration p99 <= 500 ms over the last 60 s, threshold 1 (the first failed check rolls
  back), no data a failed check; stepWeight schedule 20 -> 60 -> promote, one interval each.
- `argo`: Argo Rollouts' documented background analysis (docs/features/analysis.md): the
  success-rate AnalysisTemplate (interval 5m, `irate(...[5m])`, successCondition
  result[0] >= 0.95, failureLimit 3) from step 2 of setWeight 20/40/60/80 with 10 min pauses.

Printed per judge and traffic level: A/A false rollbacks (the same failure rate on both tracks,
0.1 %: a real service's background noise), rollouts left paused, time to promote the A/A
candidate (median), and for candidates failing 30 %, 5 % and 1 % of requests, 150 ms and 20 ms
slower, or predicting one class 80 % of the time, the share rolled back and the median time from
the candidate's first request to the rollback.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
from rollwise.api.v1alpha1 import AnalysisSpec, Verdict
from rollwise.plan.analysis import SAMPLES, Measured, QueryRequest, next_due, record, start, taken
from rollwise.plan.compare import client_error_excess, psi_of
from rollwise.plan.latency import Histogram
from rollwise.plan.measurement import Counts, Value
from rollwise.plan.names import Track

HORIZON = 2500
"""Seconds simulated per rollout: Argo's documented schedule takes 40 minutes."""
T0 = datetime(2026, 1, 1, tzinfo=UTC)


BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""The serving image's latency buckets (rollwise_serving.metrics.LATENCY_BUCKETS)."""


def bucket_probabilities(shift: float, rng: np.random.Generator, n: int = 200_000) -> np.ndarray:
    """Each latency bucket's share (the last is above 10 s) for a server answering in about 4 ms
    (lognormal, sigma 0.5) with 2 % of requests on a slow path of 30-300 ms, plus `shift` seconds."""
    body = rng.lognormal(np.log(0.004), 0.5, n)
    slow = rng.random(n) < 0.02
    body[slow] = rng.uniform(0.03, 0.3, int(slow.sum()))
    index = np.searchsorted(np.asarray(BOUNDS), body + shift, side="left")
    return np.bincount(index, minlength=len(BOUNDS) + 1) / n


THIRDS = np.full(3, 1 / 3)
SHIFTED = np.asarray([0.8, 0.1, 0.1])
"""One class shifted: 80 % of predictions instead of a third, PSI 0.97 against the 0.2 threshold."""
CLASSES = ("setosa", "versicolor", "virginica")


@dataclass(frozen=True)
class Traffic:
    """One rollout's requests per second, each track's failure probability and latency buckets'
    shares; each judge applies its own weights to them."""

    arrivals: np.ndarray
    p_c: float
    p_s: float
    lat_c: np.ndarray
    lat_s: np.ndarray
    classes_c: np.ndarray = field(default_factory=lambda: THIRDS)
    """The candidate's predicted class shares (stable's are a third each)."""


@dataclass
class Result:
    outcome: str  # "promoted", "rolled back", "paused", "running"
    seconds: float


def simulate(
    rng: np.random.Generator, rate: float, p_c: float, p_s: float, lat_c: np.ndarray, lat_s: np.ndarray,
    classes_c: np.ndarray | None = None,
) -> Traffic:  # fmt: skip
    return Traffic(
        rng.poisson(rate, HORIZON), p_c, p_s, lat_c, lat_s, THIRDS if classes_c is None else classes_c
    )


@dataclass
class Split:
    """A judge's view of one rollout: per second, requests and failures per track, as scraped."""

    n_c: np.ndarray
    f_c: np.ndarray
    n_s: np.ndarray
    f_s: np.ndarray
    h_c: np.ndarray
    """Per second, the candidate's requests in each latency bucket (HORIZON x buckets + 1)."""
    h_s: np.ndarray
    k_c: np.ndarray
    """Per second, the candidate's predictions of each class."""
    k_s: np.ndarray
    scrape: float
    phase: float

    @classmethod
    def of(cls, traffic: Traffic, weights: np.ndarray, rng: np.random.Generator, scrape: float) -> Split:
        n_c = rng.binomial(traffic.arrivals, weights)
        n_s = traffic.arrivals - n_c
        f_c, f_s = rng.binomial(n_c, traffic.p_c), rng.binomial(n_s, traffic.p_s)
        h_c, h_s = rng.multinomial(n_c, traffic.lat_c), rng.multinomial(n_s, traffic.lat_s)
        k_c, k_s = rng.multinomial(n_c - f_c, traffic.classes_c), rng.multinomial(n_s - f_s, THIRDS)
        return cls(n_c, f_c, n_s, f_s, h_c, h_s, k_c, k_s, scrape, float(rng.random() * scrape))

    def seen(self, t: float) -> int:
        """Seconds of traffic Prometheus holds at time t (up to its last scrape)."""
        last = self.phase + np.floor((t - self.phase) / self.scrape) * self.scrape
        return max(0, int(last))

    def between(self, a: float, b: float) -> tuple[float, float, float, float]:
        """(n_c, f_c, n_s, f_s) Prometheus shows between times a and b (each at its last scrape)."""
        i, j = self.seen(a), self.seen(b)
        n_c, f_c, n_s, f_s = (float(x[i:j].sum()) for x in (self.n_c, self.f_c, self.n_s, self.f_s))
        return n_c, f_c, n_s, f_s

    def classes(self, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
        """Each track's predictions per class Prometheus shows between times a and b."""
        i, j = self.seen(a), self.seen(b)
        return self.k_c[i:j].sum(axis=0), self.k_s[i:j].sum(axis=0)

    def buckets(self, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
        """Each track's requests per latency bucket Prometheus shows between times a and b."""
        i, j = self.seen(a), self.seen(b)
        return self.h_c[i:j].sum(axis=0), self.h_s[i:j].sum(axis=0)


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
        "metrics": [
            {"name": "success-rate", "builtin": "successRate", "threshold": {"min": 99}},
            {"name": "latency", "builtin": "latencyP99", "threshold": {"max": 0.25}},
            {"name": "drift", "builtin": "predictionDrift", "threshold": {"max": 0.2}},
        ],
    }
)  # fmt: skip
EVIDENCE_SPEC = SPEC.model_copy(update={"max_duration_seconds": 300})
"""The same, ended by the evidence: each step passes once both checks show the candidate no worse."""


def _cumulative(track: str, hist: np.ndarray) -> dict[tuple[str, ...], float]:
    cum = np.cumsum(hist)
    out = {(track, repr(b)): float(cum[i]) for i, b in enumerate(BOUNDS)}
    out[(track, "+Inf")] = float(cum[-1])
    return out


def _look(split: Split, since: float, t: float, index: int, k: int, due: datetime) -> list[Measured]:
    """What the operator's queries would answer at a look: counts since the analysis started, and
    the candidate's requests over the last interval (the minSampleCount gate)."""
    n_c, f_c, n_s, f_s = split.between(since, t)
    counts = Counts(
        {("candidate", "success"): n_c - f_c, ("candidate", "server_error"): f_c,
         ("stable", "success"): n_s - f_s, ("stable", "server_error"): f_s}
    )  # fmt: skip
    thin = split.between(t - SPEC.interval_seconds, t)[0]
    h_c, h_s = split.buckets(since, t)
    latency = Counts(_cumulative("candidate", h_c) | _cumulative("stable", h_s))
    k_c, k_s = split.classes(since, t)
    drift = Counts(
        {("candidate", k): float(v) for k, v in zip(CLASSES, k_c, strict=True)}
        | {("stable", k): float(v) for k, v in zip(CLASSES, k_s, strict=True)}
    )
    return [
        Measured(QueryRequest(SAMPLES, k, index, "", due), Value(thin)),
        Measured(QueryRequest("success-rate", k, index, "", due, ("track", "outcome")), counts),
        Measured(QueryRequest("latency", k, index, "", due, ("track", "le")), latency),
        Measured(QueryRequest("drift", k, index, "", due, ("track", "class")), drift),
    ]


def _p99(hist: np.ndarray) -> float | None:
    """histogram_quantile(0.99) of one interval's buckets (None without requests)."""
    track = Track.CANDIDATE
    return Histogram.of(Counts(_cumulative(str(track), hist)), track, BOUNDS).quantile(0.99)


def _psi(candidate: np.ndarray, stable: np.ndarray) -> float:
    """The PSI of one interval's class shares, as the judge before read it."""
    if candidate.sum() <= 0 or stable.sum() <= 0:
        return 0.0
    return psi_of(list(candidate / candidate.sum()), list(stable / stable.sum()))[0]


def rollwise(traffic: Traffic, rng: np.random.Generator, scrape: float, spec: AnalysisSpec = SPEC) -> Result:
    """The real analysis code (`record`), two analysis steps at 20 % and 60 %, the second starting
    at the look that passed the first; looks when `next_due` says."""
    step_start, t = 0.0, 0.0
    phase = float(rng.random() * scrape)
    for index, weight in enumerate((0.2, 0.6)):
        split = Split.of(traffic, schedule((0, weight)), rng, scrape)  # read only from step_start on
        split.phase = phase
        analysis = start(spec, step=index, now=T0 + timedelta(seconds=step_start))
        while analysis.verdict is Verdict.RUNNING:
            due = next_due(spec, analysis)
            t = (due - T0).total_seconds()
            if t >= HORIZON:
                return Result("running", t)
            answers = _look(split, step_start, t, index, taken(analysis), due)
            analysis = record(spec, analysis, answers, step=index, count=None)
        if analysis.verdict is Verdict.FAILED:
            return Result("rolled back", t)
        if analysis.verdict is Verdict.INCONCLUSIVE:
            return Result("paused", t)
        step_start = t
    return Result("promoted", t)


def rollwise_evidence(traffic: Traffic, rng: np.random.Generator, scrape: float) -> Result:
    """The same with `maxDurationSeconds: 300`: a step ends as soon as the evidence decides."""
    return rollwise(traffic, rng, scrape, EVIDENCE_SPEC)


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
            p99 = _p99(split.buckets(t - SPEC.interval_seconds, t)[0])
            psi = _psi(*split.classes(t - SPEC.interval_seconds, t))
            if 100 * (n_c - f_c) / (n_c + excess) < 99 or (p99 is not None and p99 > 0.25) or psi > 0.2:
                return Result("rolled back", t)
            passed += 1
        step_start = t
    return Result("promoted", step_start)


def flagger(traffic: Traffic, rng: np.random.Generator, scrape: float) -> Result:
    """Flagger's defaults: every 60 s, success rate over the last 60 s >= 99; threshold 1."""
    split = Split.of(traffic, schedule((0, 0.2), (60, 0.6)), rng, scrape)
    for t in (60.0, 120.0):
        n_c, f_c, _, _ = split.between(t - 60, t)
        p99 = _p99(split.buckets(t - 60, t)[0])
        if n_c <= 0 or 100 * (n_c - f_c) / n_c < 99 or (p99 is not None and p99 > 0.5):
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
    "rollwise-evidence": rollwise_evidence,
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
    base = bucket_probabilities(0.0, rng)
    bad = {
        "30 %": (0.3, base), "5 %": (0.05, base), "1 %": (0.01, base),
        "+150 ms": (background, bucket_probabilities(0.150, rng)),
        "+20 ms": (background, bucket_probabilities(0.020, rng)),
        "a class shifted": (background, base),
    }  # fmt: skip
    print(f"scrape {args.scrape:g} s; A/A: {args.aa} rollouts, bad: {args.bad}; background failures 0.1 %")
    header = f"{'rate/s':>6} {'judge':<17} {'A/A rolled back':>15} {'paused':>7} {'promoted in':>11}"
    for label in bad:
        header += f" {f'{label} caught':>15} {'in':>6}"
    print(header)
    for rate in (float(r) for r in args.rates.split(",")):
        for name, judge in JUDGES.items():
            aa = [
                judge(simulate(rng, rate, background, background, base, base), rng, args.scrape)
                for _ in range(args.aa)
            ]
            back = sum(r.outcome == "rolled back" for r in aa) / len(aa)
            paused = sum(r.outcome == "paused" for r in aa) / len(aa)
            promoted = [r.seconds for r in aa if r.outcome == "promoted"]
            row = f"{rate:>6g} {name:<17} {back:>15.1%} {paused:>7.1%} {median(promoted):>11}"
            for label, (p, lat) in bad.items():
                shifted = SHIFTED if label == "a class shifted" else None
                runs = [
                    judge(simulate(rng, rate, p, background, lat, base, shifted), rng, args.scrape)
                    for _ in range(args.bad)
                ]
                caught = [r.seconds for r in runs if r.outcome == "rolled back"]
                row += f" {len(caught) / len(runs):>15.0%} {median(caught):>6}"
            print(row, flush=True)


if __name__ == "__main__":
    main()
