"""Batch scoring's pure parts (#20): the sharding rule, the settings an Indexed Job's pod gets,
the row checks and the summary's size. Milliseconds, no process, no file."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rollwise_contract.features import FeatureSchema
from rollwise_serving.batch import ClassIndex, Summary, Unit, parse_batch_settings, shard_units
from rollwise_serving.config import SettingsError
from rollwise_serving.features import SchemaChecker

SHA = "0f0a20f65cbf4da94225d9b38bfeb5560e49441f44f9a8126a7f0015374a49f8"
ENV = {
    "ROLLWISE_MODEL_URI": "/models/iris-v1.joblib",
    "ROLLWISE_SHA256": SHA,
    "ROLLWISE_FEATURES": "a,b",
    "ROLLWISE_INPUT": "s3://data/day=1/",
    "ROLLWISE_OUTPUT": "/output/run-1",
    "ROLLWISE_SHARD_COUNT": "4",
}


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=9),
    count=st.integers(min_value=1, max_value=12),
)
def test_every_row_of_every_file_is_in_exactly_one_shard(rows: list[int], count: int) -> None:
    seen: dict[tuple[int, int], int] = {}
    for index in range(count):
        for unit in shard_units(len(rows), index, count):
            start, stop = unit.rows(rows[unit.file])
            for row in range(start, stop):
                assert (unit.file, row) not in seen, f"row {row} of file {unit.file} in two shards"
                seen[unit.file, row] = index
    assert len(seen) == sum(rows)


@pytest.mark.parametrize(
    ("files", "count", "expected"),
    [
        pytest.param(1, 4, [[(0, 0)], [(0, 1)], [(0, 2)], [(0, 3)]], id="one file: a quarter each"),
        pytest.param(
            8, 4, [[(0, 0), (4, 0)], [(1, 0), (5, 0)], [(2, 0), (6, 0)], [(3, 0), (7, 0)]], id="8 files"
        ),
        pytest.param(
            3, 4, [[(0, 0), (2, 0)], [(0, 1), (2, 1)], [(1, 0)], [(1, 1)]], id="3 files, 4 shards: halves"
        ),
        pytest.param(3, 2, [[(0, 0), (2, 0)], [(1, 0)]], id="3 files, 2 shards: whole files"),
    ],
)
def test_the_docstring_table(files: int, count: int, expected: list[list[tuple[int, int]]]) -> None:
    got = [[(u.file, u.piece) for u in shard_units(files, i, count)] for i in range(count)]
    assert got == expected


def test_a_piece_is_its_share_of_the_files_rows() -> None:
    assert [Unit(0, j, 4).rows(10) for j in range(4)] == [(0, 2), (2, 5), (5, 7), (7, 10)]


def test_the_pods_index_comes_from_the_indexed_job_and_a_flag_wins() -> None:
    assert parse_batch_settings([], {**ENV, "JOB_COMPLETION_INDEX": "3"}).shard_index == 3
    assert parse_batch_settings(["--shard-index", "1"], {**ENV, "JOB_COMPLETION_INDEX": "3"}).shard_index == 1
    taken = parse_batch_settings([], ENV)
    assert (taken.shard_index, taken.shard_count, taken.features, taken.input) == (
        0,
        4,
        ("a", "b"),
        ENV["ROLLWISE_INPUT"],
    )


def test_every_settings_problem_at_once() -> None:
    environ = {k: v for k, v in ENV.items() if k not in ("ROLLWISE_SHA256", "ROLLWISE_FEATURES")}
    with pytest.raises(SettingsError) as caught:
        parse_batch_settings(["--output-format", "json"], {**environ, "JOB_COMPLETION_INDEX": "9"})
    assert caught.value.problems == [
        "--output-format (env ROLLWISE_OUTPUT_FORMAT): 'json' is not valid; use parquet or csv",
        "--sha256 (env ROLLWISE_SHA256) is required for --format sklearn: loading it runs code from the "
        "artifact; pin its digest (`sha256sum FILE`)",
        "give the model's feature columns: --feature-schema (a path or inline JSON) or --features a,b,c",
        "--shard-index 9 is not a shard of --shard-count 4; use 0 to 3",
    ]


def test_check_rows_rejects_row_by_row_with_the_servers_messages() -> None:
    checker = SchemaChecker(
        FeatureSchema.model_validate(
            {
                "features": [
                    {"name": "x", "type": "float", "min": 0, "max": 1},
                    {"name": "n", "type": "int", "min": 0},
                    {"name": "colour", "type": "category", "values": ["red", "blue"]},
                    {"name": "opt", "type": "float", "required": False, "default": 0.5},
                ]
            }
        )
    )
    columns = {
        "x": np.array([0.5, 2.0, np.nan, 0.1]),
        "n": np.array([1.0, 1.5, 3.0, 2.0]),
        "colour": np.array(["blue", "red", "green", None], dtype=object),
        "opt": np.array([np.nan, 0.2, 0.3, 0.4]),
    }
    matrix, problems = checker.check_rows(columns, 4, "rows", first_row=100)
    assert {r: [p.message for p in ps] for r, ps in problems.items()} == {
        1: ["rows[101][0] (x): 2 is outside [0, 1]", "rows[101][1] (n): 1.5 is not a whole number"],
        2: [
            "rows[102][0] (x): missing; this feature is required",
            "rows[102][2] (colour): 'green' is not one of red, blue",
        ],
        3: ["rows[103][2] (colour): missing; this feature is required"],
    }
    assert matrix[0].tolist() == [0.5, 1.0, 1.0, 0.5]  # blue is index 1; the left-out opt its default
    _, unnumbered = checker.check_rows(columns, 4, "")
    assert [p.message for p in unnumbered[1]] == ["x: 2 is outside [0, 1]", "n: 1.5 is not a whole number"]


MIXED = SchemaChecker(
    FeatureSchema.model_validate(
        {
            "features": [
                {"name": "x", "type": "float", "min": 0, "max": 1},
                {"name": "n", "type": "int", "min": 0, "max": 9},
                {"name": "b", "type": "bool"},
                {"name": "opt", "type": "float", "required": False, "default": 0.5},
                {"name": "free", "type": "float", "required": False},
            ]
        }
    )
)
VALUES = [0.0, 0.25, 1.0, 3.0, 1.5, -0.0, -2.0, 9.0, 10.0, np.nan, np.inf, -np.inf, 1e300]


@settings(max_examples=300, deadline=None)
@given(
    picks=st.lists(st.tuples(*[st.sampled_from(range(len(VALUES)))] * 5), min_size=0, max_size=12),
    clean=st.booleans(),
    ints=st.booleans(),
)
def test_check_rows_finds_what_the_row_by_row_checks_find(
    picks: list[tuple[int, ...]], clean: bool, ints: bool
) -> None:
    """The whole-column test (``_all_valid``) only skips the row by row checks where they find
    nothing: same matrix, same problems and messages, with or without it, on any mix of values."""
    rows = len(picks)
    columns = {
        name: np.array([VALUES[p[c]] for p in picks], dtype=np.float64)
        for c, name in enumerate(("x", "n", "b", "opt", "free"))
    }
    if clean:  # in bounds and whole where they must be: the whole-column test passes for each
        columns = {k: np.where(np.isfinite(v) & (v >= 0) & (v <= 1), v, 1.0) for k, v in columns.items()}
        columns["n"], columns["b"] = np.floor(columns["n"]), np.floor(columns["b"])
    if ints:
        columns["n"] = np.clip(np.nan_to_num(columns["n"]), -1, 99).astype(np.int64)
    fast = MIXED.check_rows(columns, rows, "rows", first_row=10)
    slow_checker = SchemaChecker(MIXED.declared)
    slow_checker._all_valid = lambda c, values: False  # type: ignore[method-assign]  # the row by row path alone
    slow = slow_checker.check_rows(columns, rows, "rows", first_row=10)
    np.testing.assert_array_equal(fast[0], slow[0])
    assert {r: [p.message for p in ps] for r, ps in fast[1].items()} == {
        r: [p.message for p in ps] for r, ps in slow[1].items()
    }
    if clean and rows:
        assert not fast[1]


def test_class_index_finds_each_labels_class_or_declines() -> None:
    iris = ClassIndex(["setosa", "versicolor", "virginica"])
    labels = np.array(["virginica", "setosa", "versicolor", "setosa"])
    assert iris.of(labels).tolist() == [2, 0, 1, 0]
    assert iris.of(labels[:0]).tolist() == []
    assert iris.of(np.array(["virginica", "vernicolor"])) is None, "not a class, though its 4th letter is"
    assert iris.of(np.array(["setos"])) is None, "another width"
    assert iris.of(np.array(["setosa", "virginica"], dtype=object)) is None
    same_everywhere = ClassIndex(["aa", "ab", "ba", "bb"])  # no one position tells the four apart
    assert same_everywhere.position is None and same_everywhere.of(np.array(["ab"])) is None
    assert ClassIndex(["0", "1"]).of(np.array(["1", "1", "0"])).tolist() == [1, 1, 0]
    assert ClassIndex(["ü", "€", "x"]).of(np.array(["€", "x"])).tolist() == [1, 2]


@settings(max_examples=200, deadline=None)
@given(
    classes=st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=6, unique=True),
    picks=st.lists(st.integers(min_value=0, max_value=6), max_size=20),
)
def test_class_index_agrees_with_a_lookup_of_the_strings(classes: list[str], picks: list[int]) -> None:
    index = ClassIndex(classes)
    labels = np.array([classes[p % len(classes)] for p in picks] or [classes[0]])
    found = index.of(labels)
    if found is not None:
        assert [classes[i] for i in found] == labels.tolist()
        assert pa.DictionaryArray.from_arrays(pa.array(found), pa.array(classes)).cast(
            pa.string()
        ).to_pylist() == (labels.tolist())


def test_the_termination_message_fits_kubernetes_4096_bytes() -> None:
    error = "input file x.parquet is not readable: " + "é\u0001" * 3000
    text = Summary(3, 4, status="failed", error=error).termination_message()
    assert 4000 < len(text.encode()) <= 4096
    body = json.loads(text)
    assert error.startswith(body["error"])
    assert (
        body["shard"] == 3 and body["status"] == "failed" and body["error"].startswith("input file x.parquet")
    )
