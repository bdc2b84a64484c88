"""The in-process prediction store: eviction by rows and by age, re-used ids, the Redis value."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from rollwise_serving.feedback import NOT_A_CLASS, Kept, PredictionStore, decode, encode

CLASSES = ("a", "b", "c")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def store(max_rows: int = 10, retention: float = 60.0, clock: Clock | None = None) -> PredictionStore:
    s = PredictionStore(
        max_rows=max_rows, retention_seconds=retention, version="v1", track="stable", clock=clock or Clock()
    )
    s.bind(CLASSES, columns=True)
    return s


def put(s: PredictionStore, pid: str, labels: list[str], probabilities: bool = True) -> None:
    p = np.full((len(labels), 3), 1 / 3) if probabilities else None
    assert s.keep(pid, np.array(labels, dtype=object), None, p, describe=True) is not None


def test_the_oldest_rows_go_first_when_over_the_bound() -> None:
    s = store(max_rows=5)
    put(s, "one", ["a", "b"])
    put(s, "two", ["c", "c"])
    put(s, "three", ["a", "a"])  # 6 rows: "one" goes
    assert s.get("one") is None and s.get("two") is not None and s.get("three") is not None
    assert s.rows == 4 and len(s) == 2


def test_an_answer_bigger_than_the_store_is_not_kept() -> None:
    s = store(max_rows=2)
    put(s, "small", ["a"])
    assert s.keep("big", np.array(["a", "b", "c"], dtype=object), None, None) is None
    assert s.get("small") is not None


def test_entries_older_than_the_retention_are_gone_and_freed() -> None:
    clock = Clock()
    s = store(max_rows=1000, retention=60, clock=clock)
    put(s, "old", ["a"])
    clock.now += 61
    assert s.get("old") is None
    for i in range(254):  # expiry is looked at every 256 writes
        put(s, f"new-{i}", ["b"])
    assert len(s) == 1 + 254
    put(s, "256th", ["b"])
    assert len(s) == 255 and s.rows == 255


def test_a_reused_id_keeps_only_its_newest_answer_and_its_stale_copy_evicts_nothing() -> None:
    s = store(max_rows=4)
    put(s, "x", ["a", "a"])
    put(s, "y", ["b"])
    put(s, "x", ["c"])  # x answered again: its old two rows are released
    assert s.rows == 2
    kept = s.get("x")
    assert kept is not None and kept.rows == 1 and kept.labels is not None
    assert kept.labels[int(kept.codes[0])] == "c"  # type: ignore[index]  # codes set for a classifier
    put(s, "z", ["a", "a", "a"])  # 5 rows: the stale x is skipped, y goes, the newest x stays
    assert s.get("y") is None and s.get("x") is not None and s.rows == 4


def test_a_row_is_marked_once() -> None:
    s = store()
    put(s, "x", ["a", "b"])
    assert s.mark("x", 1) and not s.mark("x", 1) and s.mark("x", 0)


def test_probabilities_are_kept_as_float32_and_labels_outside_the_classes_are_no_class() -> None:
    s = store()
    probabilities = np.array([[0.1, 0.7, 0.2], [0.3, 0.3, 0.4]])
    kept = s.keep("x", np.array(["b", "zzz"], dtype=object), None, probabilities, describe=True)
    assert kept is not None and kept.codes is not None and kept.probabilities is not None
    assert kept.codes.tolist() == [1, NOT_A_CLASS]
    assert kept.probabilities.dtype == np.float32
    again = s.get("x")
    assert again is not None and again.probabilities is not None
    np.testing.assert_array_equal(again.probabilities, np.float32([[0.1, 0.7, 0.2], [0.3, 0.3, 0.4]]))


@pytest.mark.parametrize(
    ("classes", "label", "code"),
    [
        (CLASSES, "c", 2),  # the one-row fast path
        (CLASSES, "zzz", NOT_A_CLASS),  # closed classes: not one of them
        (tuple(str(i) for i in range(3)), 2, 2),  # integer labels of string classes
        (tuple(f"k{i}" for i in range(3000)), "k2999", 2999),  # past the fast path's table
    ],
)
def test_a_one_row_answer_keeps_the_same_code_as_a_batch_would(
    classes: tuple[str, ...], label: object, code: int
) -> None:
    s = PredictionStore(max_rows=10, retention_seconds=60, version="v1", track="stable")
    s.bind(classes, columns=False)
    one = s.keep("one", np.array([label], dtype=object), None, None, describe=True)
    two = s.keep("two", np.array([label, label], dtype=object), None, None, describe=True)
    assert one is not None and two is not None and one.codes is not None and two.codes is not None
    assert one.codes.tolist() == [code] and two.codes.tolist() == [code, code]


def test_open_labels_are_coded_as_they_come_on_the_fast_path_too() -> None:
    s = PredictionStore(max_rows=10, retention_seconds=60, version="v1", track="stable")
    for pid, label in (("1", "x"), ("2", "y"), ("3", "x")):
        s.keep(pid, np.array([label], dtype=object), None, None)
    kept = [s.get(pid) for pid in "123"]
    assert [k.codes.tolist() for k in kept if k is not None and k.codes is not None] == [[0], [1], [0]]
    assert kept[0] is not None and kept[0].labels == ("x", "y")


@pytest.mark.parametrize(
    "kept",
    [
        pytest.param(
            Kept(
                "v1",
                "stable",
                2,
                CLASSES,
                True,
                np.array([2, 0], np.uint16),
                None,
                np.eye(2, 3, dtype=np.float32),
            ),
            id="a classifier with probabilities",
        ),
        pytest.param(
            Kept("v2", "candidate", 3, None, False, None, np.array([1.5, -2.0, 1e9]), None), id="a regressor"
        ),
    ],
)
def test_the_redis_value_reads_back_as_written(kept: Kept) -> None:
    back = decode(encode(kept))
    assert back is not None
    assert (back.version, back.track, back.rows, back.labels, back.closed) == (
        kept.version,
        kept.track,
        kept.rows,
        kept.labels,
        kept.closed,
    )
    for a, b in (
        (back.codes, kept.codes),
        (back.values, kept.values),
        (back.probabilities, kept.probabilities),
    ):
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            np.testing.assert_array_equal(a, b)


def test_open_classes_travel_as_the_labels_the_answer_names() -> None:
    s = PredictionStore(max_rows=10, retention_seconds=60, version="v1", track="stable")
    for label in ("p", "q", "r"):
        assert s.keep(label, np.array([label], dtype=object), None, None, describe=True) is not None
    kept = s.keep("x", np.array(["r", "p", "r"], dtype=object), None, None, describe=True)
    assert kept is not None and kept.labels == ("p", "q", "r")
    back = decode(encode(kept))
    assert back is not None and back.labels == ("p", "r") and not back.closed
    assert [back.labels[c] for c in back.codes.tolist()] == ["r", "p", "r"]  # type: ignore[union-attr]


@pytest.mark.parametrize("value", [b"", b"rw2xxxx", b"rwf1\x00\x00\x00\x05{nope", b"rwf1\x00\x00\x00\x02{}"])
def test_a_value_of_another_kind_reads_as_nothing(value: bytes) -> None:
    assert decode(value) is None


def test_single_row_answers_cost_a_bounded_few_hundred_bytes_each() -> None:
    """The per-id cost the settings' docs quote: the dict entry, the id and one small bytearray."""
    n = 100_000
    s = store(max_rows=n)
    ids = [f"{i:016x}" for i in range(n)]
    labels = np.array(["b"], dtype=object)
    probabilities = np.array([[0.2, 0.5, 0.3]])
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for pid in ids:
        s.keep(pid, labels, None, probabilities)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    per_id = used / n
    print(f"\n{per_id:.0f} bytes per single-row answer kept (ids held by the caller)")
    assert per_id < 200
