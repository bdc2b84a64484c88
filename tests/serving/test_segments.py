"""Signals per segment (#15) from real servers: rows by outcome, predicted classes, labelled
quality (in process and joined through a real Redis across tracks) and shadow agreement, each by
the segment value of the row; and the operator's own segment queries on a real Prometheus.

The models are `python`-format files written here whose answer (or failure) depends only on a
row's segment features, so every expected count follows from the rows sent, whatever the batching.
Column 0 is `country` (fr, de, it, es; `maxValues: 2`, so it and es are `other`), column 1 `age`
(optional, bins 18 and 65).
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from rollwise.api.v1alpha1 import AnalysisSpec, ModelDeployment
from rollwise.metrics.prometheus import PrometheusProvider
from rollwise.plan.analysis import requests_for, start
from rollwise.plan.measurement import Counts
from rollwise_contract.features import FeatureSchema
from rollwise_serving.features import SMALL_REQUEST_ROWS, SchemaChecker

from tests.serving.conftest import Redis, Server, ServerFactory, infer_body, wait_for
from tests.serving.test_prometheus import prometheus, scalar
from tests.serving.test_shadow_agreement import eventually, python_model
from tests.unit.manifests import base

__all__ = ["prometheus"]  # the real Prometheus of test_prometheus, scraping this module's `fleet`

SCHEMA: dict[str, Any] = {
    "features": [
        {"name": "country", "type": "category", "values": ["fr", "de", "it", "es"]},
        {"name": "age", "type": "int", "min": 0, "max": 120, "required": False},
    ],
    "output": {"kind": "classifier", "classes": ["no", "yes"]},
    "segments": [{"feature": "country", "maxValues": 2}, {"feature": "age", "bins": [18, 65]}],
}
REGRESSION_SCHEMA = {**SCHEMA, "output": {"kind": "regressor"}}

CLASSIFIER = """
import numpy as np

CLASSES = ["no", "yes"]


class Model:
    classes = CLASSES

    def predict(self, inputs):
        x = np.asarray(next(iter(inputs.values())), dtype=np.float64)
        if ({fail}) .any():
            raise RuntimeError("this model fails on these rows")
        index = (np.nan_to_num(x[:, 1]) >= 65).astype(int)
        index = np.where({flip}, 1 - index, index)
        probabilities = np.full((len(x), 2), 0.2)
        probabilities[np.arange(len(x)), index] = 0.8
        return {{"label": np.asarray(CLASSES, dtype=object)[index], "probabilities": probabilities}}
"""
"""Answers `yes` for age >= 65 (a missing age counts as 0), except on the rows `flip` selects; fails
the whole request when `fail` selects a row (both numpy expressions of `x`)."""

REGRESSOR = """
import numpy as np


class Model:
    def predict(self, inputs):
        x = np.asarray(next(iter(inputs.values())), dtype=np.float64)
        return {"prediction": np.nan_to_num(x[:, 1])}
"""
"""Predicts the age (0 when missing)."""

NEVER = "x[:, 0] < 0"
INFER = "/v2/models/iris/infer"
PREDICT = "/v2/models/iris/predict"
FEEDBACK = "/v2/models/iris/feedback"
FR, DE, IT, ES = 0.0, 1.0, 2.0, 3.0
ROWS = [[FR, 30], [FR, 70], [IT, 10], [ES, 40]]
"""Predicted no, yes, no, no; country fr, fr, other, other; age 18..65, >=65, <18, 18..65."""


def classifier(tmp: Path, file: str, *, version: str, fail: str = NEVER, flip: str = NEVER) -> list[str]:
    return python_model(tmp, file, CLASSIFIER.format(fail=fail, flip=flip), version=version)


def schema(doc: dict[str, Any] = SCHEMA) -> list[str]:
    return ["--feature-schema", json.dumps(doc)]


def segment(server: Server, name: str, segment: str, **labels: str) -> dict[str, float]:
    """Every value of one segment with its sample, for the labels given (0 where none)."""
    values = {"country": ("fr", "de", "other", "missing"), "age": ("<18", "18..65", ">=65", "missing")}
    text = server.metrics()
    return {
        v: _sum(text, f"rollwise_segment_{name}_total", segment=segment, value=v, **labels)
        for v in values[segment]
    }


def _sum(text: str, name: str, **labels: str) -> float:
    from tests.serving.conftest import metric_value  # noqa: PLC0415 - the one sample reader

    return metric_value(text, name, **labels)


def _exported(text: str, name: str, **labels: str) -> bool:
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    return any(
        s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        for family in text_string_to_metric_families(text)
        for s in family.samples
    )


def infer(server: Server, rows: list[list[float]], **extra: Any) -> httpx.Response:
    return server.post(INFER, content=infer_body(rows, "FP64", **extra))


# ---- the coder -----------------------------------------------------------------------------------


def test_the_vectorised_codes_name_what_value_of_names_for_every_row() -> None:
    """The hot path's codes against the contract's one definition, `Segment.value_of`, on bin
    edges, between them, NaN, every category index (past `maxValues` too) and both bools."""
    doc = {
        "features": [
            {"name": "country", "type": "category", "values": ["fr", "de", "it", "es"]},
            {"name": "score", "type": "float", "required": False},
            {"name": "member", "type": "bool", "required": False},
        ],
        "segments": [
            {"feature": "country", "maxValues": 2},
            {"feature": "score", "bins": [-1.5, 0, 18, 65]},
            {"feature": "member"},
        ],
    }
    declared = FeatureSchema.model_validate(doc)
    checker = SchemaChecker(declared)
    assert checker.segments is not None
    scores = [-3, -1.5, -1.4999, -0.0, 0, 17.99, 18, 64, 65, 65.01, 1e9, math.nan]
    matrix = np.array([[i % 4, s, (i % 3) if i % 3 < 2 else math.nan] for i, s in enumerate(scores)])
    assert len(matrix) > SMALL_REQUEST_ROWS  # numpy's path; one row at a time is plain Python's
    coder = checker.segments
    for codes in (
        coder.codes(matrix),
        np.vstack([coder.codes(matrix[i : i + 1]) for i in range(len(matrix))]),
    ):
        _assert_named_as_value_of(declared, matrix, codes)
    codes = coder.codes(matrix)
    assert codes.dtype == np.uint8 and codes.shape == (len(scores), 3)
    assert coder.codes(matrix[:3]).dtype == np.uint8
    assert set(coder.values[1]) == {"<-1.5", "-1.5..0", "0..18", "18..65", ">=65", "missing"}


def _assert_named_as_value_of(declared: FeatureSchema, matrix: Any, codes: Any) -> None:
    for s, seg in enumerate(declared.segments):
        feature = next(f for f in declared.features if f.name == seg.feature)
        column = [f.name for f in declared.features].index(seg.feature)
        named = [seg.values(feature)[c] for c in codes[:, s].tolist()]
        assert named == [seg.value_of(feature, float(x)) for x in matrix[:, column]], seg.feature


# ---- rows and predictions --------------------------------------------------------------------------


def test_rows_by_outcome_and_predicted_classes_are_counted_per_segment_value(
    fresh_servers: ServerFactory, tmp_path: Path
) -> None:
    """The primary fails on de rows and the fallback on ages under 18: de, 30 is answered by the
    fallback, de, 10 by nobody; refused requests count in no segment; a left-out age is missing."""
    s = fresh_servers.start(
        *classifier(tmp_path, "primary.py", version="v1", fail="x[:, 0] == 1"),
        *schema(),
        *_fallback(tmp_path),
    )
    assert infer(s, ROWS).status_code == 200
    assert infer(s, [[DE, 30]]).status_code == 200
    assert infer(s, [[DE, 10]]).status_code == 500
    assert s.post(PREDICT, json={"instances": [{"country": "es"}]}).status_code == 200
    assert infer(s, [[9, 30]]).status_code == 422  # no such country
    assert infer(s, [[FR, 30.5]]).status_code == 422  # an age is whole
    assert s.sample("rollwise_requests_total", outcome="client_error") == 2

    rows = {o: segment(s, "rows", "country", outcome=o) for o in ("success", "fallback", "server_error")}
    assert rows == {
        "success": {"fr": 2, "de": 0, "other": 3, "missing": 0},
        "fallback": {"fr": 0, "de": 1, "other": 0, "missing": 0},
        "server_error": {"fr": 0, "de": 1, "other": 0, "missing": 0},
    }
    ages = {o: segment(s, "rows", "age", outcome=o) for o in ("success", "fallback", "server_error")}
    assert ages == {
        "success": {"<18": 1, "18..65": 2, ">=65": 1, "missing": 1},
        "fallback": {"<18": 0, "18..65": 1, ">=65": 0, "missing": 0},
        "server_error": {"<18": 1, "18..65": 0, ">=65": 0, "missing": 0},
    }
    assert s.sample("rollwise_segment_rows_total", outcome="client_error") == 0
    # every value is exported from the start, so Prometheus sees each counter's first increase
    assert _exported(s.metrics(), "rollwise_segment_rows_total", segment="country", value="missing")

    predicted = {c: segment(s, "predictions", "country", **{"class": c}) for c in ("no", "yes")}
    assert predicted == {
        "no": {"fr": 1, "de": 1, "other": 3, "missing": 0},
        "yes": {"fr": 1, "de": 0, "other": 0, "missing": 0},
    }
    assert segment(s, "predictions", "age", **{"class": "yes"}) == {
        "<18": 0, "18..65": 0, ">=65": 1, "missing": 0
    }  # fmt: skip
    assert s.sample("rollwise_segment_predictions_total", segment="age") == 6


def test_two_workers_export_one_view_of_the_segment_counters(
    fresh_servers: ServerFactory, tmp_path: Path
) -> None:
    """prometheus_client's multiprocess files: every worker's rows and classes add up in /metrics."""
    s = fresh_servers.start(*classifier(tmp_path, "m.py", version="v1"), *schema(), "--workers", "2")
    with httpx.Client(base_url=s.url, timeout=10) as c:
        for _ in range(20):  # new connections spread over both workers
            assert c.post(INFER, content=infer_body(ROWS, "FP64"), headers={"connection": "close"}).is_success
    assert segment(s, "rows", "country", outcome="success") == {"fr": 40, "de": 0, "other": 40, "missing": 0}
    assert segment(s, "predictions", "age", **{"class": "yes"})[">=65"] == 20


def _fallback(tmp: Path) -> list[str]:
    args = classifier(tmp, "fallback.py", version="v1", fail="np.nan_to_num(x[:, 1]) < 18")
    return ["--fallback-uri", args[1], "--fallback-sha256", args[3], "--fallback-format", "python"]


def test_a_server_without_segments_exports_no_segment_series(
    fresh_servers: ServerFactory, tmp_path: Path
) -> None:
    doc = {k: v for k, v in SCHEMA.items() if k != "segments"}
    s = fresh_servers.start(*classifier(tmp_path, "m.py", version="v1"), *schema(doc))
    assert infer(s, ROWS).status_code == 200
    assert "rollwise_segment_rows_total{" not in s.metrics()


# ---- labelled ------------------------------------------------------------------------------------


def label(server: Server, items: list[dict[str, Any]]) -> None:
    r = server.post(FEEDBACK, content=json.dumps(items).encode())
    assert r.status_code == 200, r.text


def test_labels_are_counted_by_the_segment_of_the_predicted_row(
    fresh_servers: ServerFactory, tmp_path: Path
) -> None:
    s = fresh_servers.start(*classifier(tmp_path, "m.py", version="v1"), *schema())
    doc = infer(s, ROWS, id="a").json()
    labels = ["no", "no", "no", "yes"]  # right, wrong, right, wrong
    label(s, [{"id": doc["id"], "row": i, "label": v} for i, v in enumerate(labels)])
    mine = {"version": "v1", "track": "stable"}
    assert segment(s, "labelled", "country", **mine) == {"fr": 2, "de": 0, "other": 2, "missing": 0}
    assert segment(s, "label_correct", "country", **mine) == {"fr": 1, "de": 0, "other": 1, "missing": 0}
    assert segment(s, "labelled", "age") == {"<18": 1, "18..65": 2, ">=65": 1, "missing": 0}
    assert segment(s, "label_correct", "age") == {"<18": 1, "18..65": 1, ">=65": 0, "missing": 0}
    assert s.sample("rollwise_labelled_total") == 4  # the whole-traffic counter agrees


def test_a_regressors_errors_are_summed_per_segment(fresh_servers: ServerFactory, tmp_path: Path) -> None:
    s = fresh_servers.start(
        *python_model(tmp_path, "r.py", REGRESSOR, version="r1"), *schema(REGRESSION_SCHEMA)
    )
    doc = infer(s, [[FR, 30], [IT, 70], [FR, 10]]).json()
    label(s, [{"id": doc["id"], "row": r, "value": v} for r, v in ((0, 32), (1, 69), (2, 10))])
    assert segment(s, "label_abs_error", "country") == {"fr": 2, "de": 0, "other": 1, "missing": 0}
    assert segment(s, "label_squared_error", "country") == {"fr": 4, "de": 0, "other": 1, "missing": 0}
    assert segment(s, "label_abs_error", "age") == {"<18": 0, "18..65": 2, ">=65": 1, "missing": 0}
    assert segment(s, "labelled", "age", version="r1") == {"<18": 1, "18..65": 1, ">=65": 1, "missing": 0}
    assert s.sample("rollwise_segment_label_correct_total") == 0


def test_labels_joined_across_tracks_through_redis_keep_the_rows_segments(
    fresh_servers: ServerFactory, tmp_path: Path, redis_server: Redis
) -> None:
    """The candidate predicts, the stable pod receives the labels: it finds the rows' segment codes
    in Redis and counts them under the candidate's track and version."""
    shared = ["--feedback-redis-url", redis_server.url]
    stable = fresh_servers.start(*classifier(tmp_path, "s.py", version="v1"), *schema(), *shared)
    candidate = fresh_servers.start(
        *classifier(tmp_path, "c.py", version="v2"), *schema(), *shared, "--track", "candidate"
    )
    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    by_candidate = infer(candidate, ROWS).json()
    missing = candidate.post(PREDICT, json={"instances": [{"country": "de"}]}).json()
    for doc in (by_candidate, missing):
        wait_for(
            lambda d=doc: client.exists(f"rollwise:default:iris:feedback:{d['id']}"), 5, "the write to Redis"
        )
    labels = ["no", "yes", "yes", "no"]  # right, right, wrong, right
    label(stable, [{"id": by_candidate["id"], "row": i, "label": v} for i, v in enumerate(labels)])
    label(stable, [{"id": missing["id"], "label": "no"}])
    theirs = {"version": "v2", "track": "candidate"}
    assert segment(stable, "labelled", "country", **theirs) == {"fr": 2, "de": 1, "other": 2, "missing": 0}
    assert segment(stable, "label_correct", "country", **theirs) == {
        "fr": 2,
        "de": 1,
        "other": 1,
        "missing": 0,
    }
    assert segment(stable, "labelled", "age", **theirs) == {"<18": 1, "18..65": 2, ">=65": 1, "missing": 1}
    assert segment(stable, "label_correct", "age", **theirs) == {
        "<18": 0,
        "18..65": 2,
        ">=65": 1,
        "missing": 1,
    }
    assert stable.sample("rollwise_segment_labelled_total", track="stable") == 0
    assert candidate.sample("rollwise_segment_labelled_total") == 0


def test_a_segment_another_track_declares_otherwise_is_not_counted_under_ours(
    fresh_servers: ServerFactory, tmp_path: Path, redis_server: Redis
) -> None:
    """The candidate cuts age at 21 where stable cuts at 18: its codes would name other bins here,
    so stable counts the label under country only."""
    shared = ["--feedback-redis-url", redis_server.url]
    stable = fresh_servers.start(*classifier(tmp_path, "s.py", version="v1"), *schema(), *shared)
    other_bins = {**SCHEMA, "segments": [SCHEMA["segments"][0], {"feature": "age", "bins": [21, 65]}]}
    candidate = fresh_servers.start(
        *classifier(tmp_path, "c.py", version="v2"), *schema(other_bins), *shared, "--track", "candidate"
    )
    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    doc = infer(candidate, [[FR, 20]]).json()
    wait_for(lambda: client.exists(f"rollwise:default:iris:feedback:{doc['id']}"), 5, "the write to Redis")
    label(stable, [{"id": doc["id"], "label": "no"}])
    assert segment(stable, "labelled", "country", version="v2") == {
        "fr": 1,
        "de": 0,
        "other": 0,
        "missing": 0,
    }
    assert stable.sample("rollwise_segment_labelled_total", segment="age") == 0
    assert stable.sample("rollwise_labelled_total", version="v2") == 1


# ---- shadow ----------------------------------------------------------------------------------------


def test_shadow_agreement_is_counted_per_segment_value_on_the_mirroring_pod(
    fresh_servers: ServerFactory, tmp_path: Path
) -> None:
    """The candidate answers the other class on fr rows: they are compared and never agree."""
    candidate = fresh_servers.start(
        *classifier(tmp_path, "c.py", version="v2", flip="x[:, 0] == 0"), *schema(), "--track", "candidate"
    )
    stable = fresh_servers.start(
        *classifier(tmp_path, "s.py", version="v1"), *schema(), "--mirror-url", candidate.url
    )
    assert infer(stable, ROWS).status_code == 200
    assert stable.post(PREDICT, json={"instances": [{"country": "de"}]}).status_code == 200
    eventually(lambda: stable.sample("rollwise_shadow_compared_total") == 5, "5 rows to be compared")
    peer = {"peer_version": "v2"}
    assert segment(stable, "shadow_compared", "country", **peer) == {
        "fr": 2,
        "de": 1,
        "other": 2,
        "missing": 0,
    }
    assert segment(stable, "shadow_agreed", "country", **peer) == {"fr": 0, "de": 1, "other": 2, "missing": 0}
    assert segment(stable, "shadow_compared", "age") == {"<18": 1, "18..65": 2, ">=65": 1, "missing": 1}
    assert segment(stable, "shadow_agreed", "age") == {"<18": 1, "18..65": 1, ">=65": 0, "missing": 1}
    assert candidate.sample("rollwise_segment_shadow_compared_total") == 0


# ---- the operator's queries on a real Prometheus ----------------------------------------------------


@pytest.fixture(scope="module")
def fleet(servers: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Server]:
    """Stable v1 answers every row; candidate v2 fails every request with a de row and says yes
    to every it row (the `prometheus` fixture labels them as pods of a ModelDeployment `iris`)."""
    tmp = tmp_path_factory.mktemp("segments")
    stable = servers.start(*classifier(tmp, "s.py", version="1.0.0"), *schema())
    candidate = servers.start(
        *classifier(tmp, "c.py", version="2.0.0", fail="x[:, 0] == 1", flip="x[:, 0] == 2"),
        *schema(),
        "--track",
        "candidate",
    )
    return {"stable": stable, "candidate": candidate}


COUNTRY = {"segment": "country"}


def _md() -> ModelDeployment:
    doc = base()
    doc["metadata"]["namespace"] = "ml"
    doc["spec"]["model"]["version"] = "2.0.0"
    doc["spec"]["model"]["featureSchema"] = SCHEMA
    doc["status"] = {"stableVersion": "1.0.0"}
    doc["spec"]["rollout"]["analysis"] = {
        "metrics": [
            {
                "name": "ok",
                "builtin": "successRate",
                "threshold": {"min": 0},
                "bySegment": "worst",
                **COUNTRY,
            },
            {
                "name": "right",
                "builtin": "accuracy",
                "threshold": {"min": 0},
                "bySegment": "worst",
                **COUNTRY,
            },
            {
                "name": "fair",
                "builtin": "parity",
                "parity": {"of": "positiveRate", "positiveClass": "yes"},
                "threshold": {"max": 100},
                **COUNTRY,
            },
        ]
    }
    return ModelDeployment.model_validate(doc)


def test_the_operators_segment_queries_count_what_the_servers_did(
    fleet: dict[str, Server], prometheus: str
) -> None:
    """Each track gets 3 x (fr 30, de 30, it 70); stable labels every row `yes`. Through a real
    Prometheus, the operator's own queries (`requests_for`) read exactly those counts."""
    wait_for(lambda: scalar(prometheus, 'count(up{job="rollwise"} == 1)') == 2, 30, "both servers scraped")
    md = _md()
    spec = md.spec.rollout.analysis
    assert isinstance(spec, AnalysisSpec)
    started = datetime.now(UTC)
    time.sleep(2)  # the counters' values at the start are scraped before traffic moves them
    for _ in range(3):
        for country, age in ((FR, 30), (DE, 30), (IT, 70)):
            for track, server in fleet.items():
                r = infer(server, [[country, age]])
                assert r.status_code == (500 if (track, country) == ("candidate", DE) else 200), r.text
                if r.status_code == 200:
                    label(server, [{"id": r.json()["id"], "label": "yes"}])
    for server in fleet.values():
        port = server.port
        for series in ("rollwise_segment_rows_total", "rollwise_segment_labelled_total"):
            # Each label is counted after its row: wait for the scrape that has both.
            total = server.sample(series, segment="country")
            wait_for(
                lambda p=port, n=total, name=series: (
                    scalar(prometheus, f'sum({name}{{instance="127.0.0.1:{p}",segment="country"}})') == n
                ),
                30,
                f"Prometheus to scrape the last of {series}",
            )
    provider = PrometheusProvider(prometheus)
    at = datetime.now(UTC)
    counts = {}
    for request in requests_for(md, spec, start(spec, step=1, now=started), step=1, at=at):
        if request.metric is None:
            continue  # the sample count of the whole analysis, not a segment query
        measured = provider.query(request.promql, at, request.by)
        assert isinstance(measured, Counts), (request.metric, measured)
        counts[request.metric] = measured.values
    assert _nonzero(counts["ok"]) == {
        ("stable", "fr", "success"): 3, ("stable", "de", "success"): 3, ("stable", "other", "success"): 3,
        ("candidate", "fr", "success"): 3, ("candidate", "de", "server_error"): 3,
        ("candidate", "other", "success"): 3,
    }  # fmt: skip
    assert len(counts["ok"]) == 2 * 4 * 3  # every (track, value, outcome) is exported, zeros too
    assert _nonzero(counts["right"]) == {
        ("stable", "fr", "labelled"): 3, ("stable", "de", "labelled"): 3, ("stable", "other", "labelled"): 3,
        ("stable", "other", "correct"): 3,
        ("candidate", "fr", "labelled"): 3, ("candidate", "other", "labelled"): 3,
    }  # fmt: skip
    assert _nonzero(counts["fair"]) == {
        ("stable", "fr", "no"): 3, ("stable", "de", "no"): 3, ("stable", "other", "yes"): 3,
        ("candidate", "fr", "no"): 3, ("candidate", "other", "no"): 3,
    }  # fmt: skip


def _nonzero(values: Any) -> dict[tuple[str, ...], float]:
    return {k: v for k, v in values.items() if v}
