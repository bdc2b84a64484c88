"""``rollwise-batch --label-column``: a backtest's shards, as real processes on real files (#20).

The candidate and the baseline are real sklearn models (the committed iris-v1, and models trained
here on flipped labels or for regression); every shard's tallies, added up, must equal the same
counts computed in-process from the two models' own ``predict`` on the same rows.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rollwise_contract.batch import BacktestReport, ShardReport, Tally
from rollwise_serving.batch import TERMINATION_MESSAGE_BYTES, Summary
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression
from sklearn.tree import DecisionTreeClassifier

from tests.serving.conftest import model_args
from tests.serving.test_batch import BAD, iris_table, run_shards

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SEGMENT = {"feature": "petal_length", "bins": [2.5, 5.0]}


def _dump(model: Any, path: Path) -> str:
    joblib.dump(model, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def setup(models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Labelled Iris-like rows (iris-v1's answer, a tenth replaced by a random class, a few
    unlabelled), a worse candidate (trained with versicolor and virginica swapped on half the
    rows) and a schema with a segment."""
    root = tmp_path_factory.mktemp("backtest")
    iris = load_iris()
    names = np.asarray(iris.target_names)[iris.target]
    flipped = names.copy()
    swap = (np.arange(len(names)) % 2 == 0) & (names != "setosa")
    flipped[swap] = np.where(names[swap] == "versicolor", "virginica", "versicolor")
    worse = DecisionTreeClassifier(random_state=0).fit(iris.data, flipped)
    stable = joblib.load(models["dir"] / models["models"]["iris-v1"]["file"])
    table = iris_table()
    x = np.column_stack([table[f].to_numpy(zero_copy_only=False) for f in FEATURES]).astype(np.float64)
    rng = np.random.default_rng(1)
    ok = ~np.isnan(x).any(axis=1)
    truth = np.full(len(x), "setosa", dtype=object)
    truth[ok] = stable.predict(x[ok])
    noisy = rng.random(len(x)) < 0.1
    truth[noisy] = rng.choice(["setosa", "versicolor", "virginica"], int(noisy.sum()))
    labels = truth.tolist()
    for row in (3, 500, 1500):
        labels[row] = None
    table = table.append_column("species", pa.array(labels, pa.string()))
    pq.write_table(table, root / "labelled.parquet", row_group_size=300)
    schema = json.loads((models["dir"] / models["feature_schema"]).read_text())
    schema["segments"] = [SEGMENT]
    (root / "schema.json").write_text(json.dumps(schema))
    return {
        "root": root,
        "table": table,
        "x": x,
        "stable": stable,
        "worse": worse,
        "worse_sha256": _dump(worse, root / "worse.joblib"),
    }


def _tally(kind: str, c: np.ndarray[Any, Any], b: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> Tally:
    """The same counts, written out plainly from their definitions."""
    if kind == "classifier":
        cr, br = c == y, b == y
        return Tally(
            rows=len(y),
            candidate_correct=int(cr.sum()),
            baseline_correct=int(br.sum()),
            baseline_only=int((br & ~cr).sum()),
            candidate_only=int((cr & ~br).sum()),
            agree=int((c == b).sum()),
        )
    ec, eb = c - y, b - y
    return Tally(
        rows=len(y),
        candidate_abs_error=float(np.abs(ec).sum()),
        baseline_abs_error=float(np.abs(eb).sum()),
        candidate_sq_error=float((ec**2).sum()),
        baseline_sq_error=float((eb**2).sum()),
        abs_diff_sq=float(((np.abs(ec) - np.abs(eb)) ** 2).sum()),
        sq_diff_sq=float(((ec**2 - eb**2) ** 2).sum()),
    )


def _close(a: Tally, b: Tally) -> None:
    for field, value in a.__dict__.items():
        assert getattr(b, field) == pytest.approx(value, rel=1e-6), field


def _summed(shards: list[Any]) -> BacktestReport:
    reports = [ShardReport.model_validate(s.summary) for s in shards]
    assert all(r.backtest is not None for r in reports), [s.stderr[-2000:] for s in shards]
    total = reports[0].backtest
    assert total is not None
    for r in reports[1:]:
        assert r.backtest is not None
        total = total + r.backtest
    return total


def test_the_shards_tallies_add_up_to_the_in_process_paired_counts(
    models: dict[str, Any], setup: dict[str, Any]
) -> None:
    root, x, table = setup["root"], setup["x"], setup["table"]
    args = [
        "--model-uri",
        str(root / "worse.joblib"),
        "--sha256",
        setup["worse_sha256"],
        "--format",
        "sklearn",
        "--feature-schema",
        str(root / "schema.json"),
        *[
            "--baseline-" + a.removeprefix("--") if a.startswith("--") else a
            for a in model_args(models, "iris-v1")[:6]
        ],
        "--label-column",
        "species",
        "--input",
        str(root / "labelled.parquet"),
        "--output",
        str(root / "out"),
        "--cache-dir",
        str(root / "cache"),
    ]
    shards = run_shards(args, 3)
    assert [s.code for s in shards] == [0, 0, 0], [s.stderr[-2000:] for s in shards]
    got = _summed(shards)

    labels = np.asarray(table["species"].to_pylist(), dtype=object)
    judged = ~np.isnan(x).any(axis=1) & (labels != None)  # noqa: E711  # elementwise, not identity
    judged[list(BAD)] = False  # out of the schema's bounds: rejected, never judged
    c = setup["worse"].predict(x[judged]).astype(str)
    b = setup["stable"].predict(x[judged]).astype(str)
    y = labels[judged].astype(str)
    want = _tally("classifier", c, b, y)
    assert got.total == want
    assert got.rows_rejected == len(BAD)
    assert got.rows_unlabelled == 3
    assert want.baseline_correct - want.candidate_correct > 0.1 * want.rows, "the candidate must be worse"

    cuts = np.searchsorted(SEGMENT["bins"], x[judged][:, 2], side="right")
    names = ["<2.5", "2.5..5", ">=5"]
    want_segments = {
        names[i]: _tally("classifier", c[cuts == i], b[cuts == i], y[cuts == i]) for i in np.unique(cuts)
    }
    assert got.segments == {"petal_length": want_segments}
    assert not got.segments_dropped
    summary = json.loads((root / "out" / "done-00000.json").read_text())
    assert summary["backtest"]["total"] == shards[0].summary["backtest"]["total"]
    assert not list((root / "out").glob("part-*")), "a backtest writes no predictions"


def test_a_regressors_error_sums_are_paired_per_row(models: dict[str, Any], setup: dict[str, Any]) -> None:
    root = setup["root"]
    iris = load_iris()
    features, target = iris.data[:, :3], iris.data[:, 3]
    good = LinearRegression().fit(features, target)
    rough = LinearRegression().fit(features[:, :1], target)
    wide = np.column_stack([features[:, 0], np.zeros(len(features)), np.zeros(len(features))])
    rough_full = LinearRegression().fit(wide, rough.predict(features[:, :1]))
    good_sha, rough_sha = _dump(good, root / "good.joblib"), _dump(rough_full, root / "rough.joblib")
    schema = {
        "features": [{"name": n, "type": "float"} for n in FEATURES[:3]],
        "output": {"kind": "regressor"},
    }
    (root / "reg-schema.json").write_text(json.dumps(schema))
    rng = np.random.default_rng(2)
    x = rng.uniform([4.3, 2.0, 1.0], [7.9, 4.4, 6.9], (900, 3)).round(2)
    y = good.predict(x) + rng.normal(0, 0.2, len(x))
    columns = {n: x[:, i] for i, n in enumerate(FEATURES[:3])}
    pq.write_table(pa.table({**columns, "width": y}), root / "reg.parquet", row_group_size=100)
    args = [
        *["--model-uri", str(root / "rough.joblib"), "--sha256", rough_sha, "--format", "sklearn"],
        *["--baseline-model-uri", str(root / "good.joblib"), "--baseline-sha256", good_sha],
        *["--feature-schema", str(root / "reg-schema.json"), "--label-column", "width"],
        *["--input", str(root / "reg.parquet"), "--output", str(root / "reg-out")],
        *["--cache-dir", str(root / "cache")],
    ]
    shards = run_shards(args, 2)
    assert [s.code for s in shards] == [0, 0], [s.stderr[-2000:] for s in shards]
    got = _summed(shards)
    assert got.kind == "regressor"
    _close(_tally("regressor", rough_full.predict(x), good.predict(x), y), got.total)


def test_a_backtest_needs_both_the_label_and_the_baseline(
    models: dict[str, Any], setup: dict[str, Any]
) -> None:
    root = setup["root"]
    args = [
        *model_args(models, "iris-v1")[:6],
        *["--feature-schema", str(root / "schema.json"), "--label-column", "species"],
        *["--input", str(root / "labelled.parquet"), "--output", str(root / "bad-out")],
    ]
    (shard,) = run_shards(args, 1)
    assert shard.code == 2
    assert "a backtest needs both --label-column and --baseline-model-uri" in shard.stderr


def test_segments_that_do_not_fit_the_termination_message_are_dropped_and_said_to_be() -> None:
    tally = Tally(
        rows=123456, candidate_correct=111111, baseline_correct=112222, baseline_only=3333, agree=120000
    )
    segments = {f"feature_{f}": {f"value-{v:02d}": tally for v in range(20)} for f in range(4)}
    report = BacktestReport(kind="classifier", total=tally, segments=segments)
    summary = Summary(shard=0, shards=1, backtest=report)
    message = summary.termination_message()
    assert len(message.encode()) <= TERMINATION_MESSAGE_BYTES
    read = ShardReport.model_validate_json(message).backtest
    assert read is not None and read.segments_dropped and read.segments == {}
    assert read.total == tally
    few = Summary(shard=0, shards=1, backtest=report.model_copy(update={"segments": {"f": {"a": tally}}}))
    kept = ShardReport.model_validate_json(few.termination_message()).backtest
    assert kept is not None and kept.segments == {"f": {"a": tally}} and not kept.segments_dropped
