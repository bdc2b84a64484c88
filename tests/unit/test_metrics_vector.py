"""The batched histogram update (``metrics._observe_many`` past ``VECTOR_MIN`` values) and the
proxy's held rows (``proxy.observe.Observer.flush``) export exactly what one observation per value
exports: the same buckets, counts and sums, series for series."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from rollwise_serving import metrics as metrics_module
from rollwise_serving.features import SchemaChecker
from rollwise_serving.metrics import ServerMetrics, _observe_many
from rollwise_serving.proxy import observe
from rollwise_serving.proxy.observe import Observer, Seen

BOUNDS = (0.0, 0.5, 1.0, 2.5, 10.0)


def samples(text: bytes) -> dict[str, float]:
    """Series to value; sums compared to 12 digits (numpy adds in another order than one by one)."""
    out = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#") and "_created" not in line:
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def same(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(
        a[k] == b[k]
        if not k.split("{")[0].endswith("_sum")
        else np.isclose(a[k], b[k], rtol=1e-12, equal_nan=True)
        for k in a
    )


def exposition(values: np.ndarray, *, vector: bool) -> dict[str, float]:
    registry = CollectorRegistry()
    histogram = Histogram("h", "h", ["k"], buckets=BOUNDS, registry=registry).labels("x")
    if vector:
        _observe_many(histogram, values)
    else:
        for v in values.tolist():
            histogram.observe(v)
    return samples(generate_latest(registry))


@pytest.mark.parametrize("seed", range(5))
def test_the_batched_update_equals_one_observe_per_value(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = np.concatenate(
        [
            rng.normal(1, 3, 500),
            np.array(BOUNDS),  # exactly on each edge: counted in that bucket (value <= bound)
            np.nextafter(np.array(BOUNDS), np.inf),
            [-50.0, 50.0],
        ]
    )
    assert len(values) >= metrics_module.VECTOR_MIN
    assert same(exposition(values, vector=True), exposition(values, vector=False))


def iris_metrics() -> tuple[ServerMetrics, SchemaChecker]:
    schema = SchemaChecker.load("examples/models/iris-schema.json")
    m = ServerMetrics(model="iris", version="v1", track="stable", schema=schema)
    m.bind_output(["setosa", "versicolor", "virginica"])
    return m, schema


def body(m: ServerMetrics) -> bytes:
    text = m.exposition()
    return b"\n".join(line for line in text.splitlines() if b"_created" not in line)


def test_held_rows_export_what_observing_each_request_at_once_exports() -> None:
    rng = np.random.default_rng(7)
    low, high = [4, 2, 1, 0.1], [8, 4.4, 6.9, 2.5]
    requests = [rng.uniform(low, high, size=(int(rng.integers(1, 4)), 4)) for _ in range(700)]
    classes = np.array(["setosa", "versicolor", "virginica"], dtype=object)
    answers = [(rng.choice(classes, len(r)), rng.uniform(0.3, 1, len(r))) for r in requests]

    held_metrics, schema = iris_metrics()
    held = Observer(held_metrics, schema)  # flushes every FLUSH_ROWS rows on its own
    direct_metrics, _ = iris_metrics()
    for features, (labels, scores) in zip(requests, answers, strict=True):
        held.predictions(
            Seen(codes=held.features("input", features)), labels=list(labels), scores=list(scores)
        )
        direct_metrics.observe_features(features)
        direct_metrics.observe_predictions(labels, scores)
    assert sum(len(r) for r in requests) > 2 * observe.FLUSH_ROWS
    held.flush()
    assert same(samples(held_metrics.exposition()), samples(direct_metrics.exposition()))


def test_rows_are_held_until_a_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observe, "FLUSH_ROWS", 10**9)
    m, schema = iris_metrics()
    observer = Observer(m, schema)
    counted = (
        b'rollwise_feature_value_count{feature="sepal_length",model="iris",track="stable",version="v1"} 1.0'
    )
    observer.features("input", np.array([[5.1, 3.5, 1.4, 0.2]]))
    observer.predictions(Seen(), labels=["setosa"], scores=[0.9])
    assert counted not in body(m)
    observer.flush()
    assert counted in body(m)
    assert (
        b'rollwise_prediction_value_count{class="setosa",model="iris",track="stable",version="v1"} 1.0'
        in body(m)
    )
