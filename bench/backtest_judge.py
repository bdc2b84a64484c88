"""The backtest judge's error rates on simulated datasets (the table in docs/batch.md).

The scenarios of tests/unit/test_backtest.py with more datasets each: the test asserts the rates,
this prints them. From the repository root: `PYTHONPATH=. .venv/bin/python bench/backtest_judge.py`.
"""

from __future__ import annotations

import numpy as np
from rollwise.api.v1alpha1 import BacktestPhase
from rollwise.plan.backtest import judge
from rollwise_contract.batch import Tally
from rollwise_contract.features import OutputKind

from tests.unit.test_backtest import _classifier_tallies, _fail_rate, _regressor_tallies, _segmented, _spec

RUNS = 20_000
ACCURACY = [
    ("A/A, worseBy 0 (the null's boundary)", 5000, 0.0, 0.04, 0.04),
    ("A/A, worseBy 0 (the null's boundary)", 300, 0.0, 0.04, 0.04),
    ("A/A, worseBy 1", 2000, 1.0, 0.035, 0.035),
    ("worse by exactly worseBy 1", 5000, 1.0, 0.04, 0.03),
    ("worse by exactly worseBy 1", 1000, 1.0, 0.05, 0.04),
    ("harmless: 0.3 points worse, worseBy 1", 2000, 1.0, 0.033, 0.030),
    ("5 points worse, worseBy 1", 2000, 1.0, 0.07, 0.02),
    ("5 points worse, worseBy 1", 1000, 1.0, 0.06, 0.01),
    ("5 points worse, worseBy 1", 500, 1.0, 0.06, 0.01),
]
"""(scenario, rows, worseBy, stable-only share, candidate-only share); stable accuracy 90 %."""


def main() -> None:
    for label, n, worse_by, stable_only, candidate_only in ACCURACY:
        tallies = _classifier_tallies(np.random.default_rng(1), n, 0.9, stable_only, candidate_only, RUNS)
        rate = _fail_rate(_spec({"name": "accuracy", "worseBy": worse_by}), tallies)
        print(f"accuracy   {label:40s} n={n:5d}  rollback rate {rate:.4f}")
    rng = np.random.default_rng(2)
    for n, p in [(1000, 0.05), (1000, 0.10), (2000, 0.10)]:
        agreement = [Tally(rows=n, agree=int(n - d)) for d in rng.binomial(n, p, RUNS)]
        rate = _fail_rate(_spec({"name": "agreement", "minimum": 95}), agreement)
        print(f"agreement  minimum 95, true {100 * (1 - p):.0f} %{'':22s} n={n:5d}  fail rate {rate:.4f}")
    for name in ("mae", "rmse"):
        rng = np.random.default_rng(21)
        same = _regressor_tallies(rng, 1000, 1.0, RUNS)
        worse = _regressor_tallies(rng, 1000, 1.2, 1000)
        aa = _fail_rate(_spec({"name": name, "worseBy": 0}), same, OutputKind.REGRESSOR)
        caught = _fail_rate(_spec({"name": name, "worseBy": 0.05}), worse, OutputKind.REGRESSOR)
        print(f"{name:10s} A/A worseBy 0: {aa:.4f}; errors 20 % larger, worseBy 0.05: {caught:.4f} (n=1000)")
    rng = np.random.default_rng(4)
    parity = _spec({"name": "accuracy", "worseBy": 0, "bySegment": True})
    aa_reports = _segmented(rng, None, 5000)
    rate = sum(judge(parity, r)[0] is BacktestPhase.FAILED for r in aa_reports) / len(aa_reports)
    print(f"parity     A/A, 4 segments of 1500 rows, worseBy 0: fail rate {rate:.4f}")
    tolerant = _spec({"name": "accuracy", "worseBy": 3, "bySegment": True})
    bad_reports = _segmented(rng, 2, 2000)
    rate = sum(judge(tolerant, r)[0] is BacktestPhase.FAILED for r in bad_reports) / len(bad_reports)
    print(f"parity     one segment 8 points worse, worseBy 3: fail rate {rate:.4f}")


if __name__ == "__main__":
    main()
