"""``rollwise_serving.spark.score`` on a real local Spark (``local[2]``, Java 17), against the batch
CLI on the same rows (#20): same predictions, the same rejected rows with the same problems, the
artifact loaded once per Python worker, and a wrong digest refused on the driver.

A missing Java fails the module with the command that installs it: a skip would hide that the
Spark path was never checked.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.serving.conftest import require_binary
from tests.serving.test_batch import (
    BAD,
    PROBABILITIES,
    ROWS,
    batch_args,
    iris_table,
    read_parts,
    read_rejects,
    run_shards,
)


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    require_binary("java", "apt-get install openjdk-17-jre-headless")
    # the workers must run this interpreter, which has rollwise installed (not `python3` on PATH)
    previous = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession  # noqa: PLC0415

    session = (
        SparkSession.builder.master("local[2]")
        .appName("rollwise-test")
        .config("spark.ui.enabled", "false")
        # loopback only: Spark would otherwise pick the host's first interface address
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    if previous is None:
        os.environ.pop("PYSPARK_PYTHON", None)
    else:
        os.environ["PYSPARK_PYTHON"] = previous


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spark-data") / "iris.parquet"
    pq.write_table(iris_table(), path, row_group_size=300)
    return path


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One download cache for the module, so every test's settings are the same (one load each)."""
    return str(tmp_path_factory.mktemp("spark-cache"))


def model_options(models: dict[str, Any], cache_dir: str) -> dict[str, Any]:
    entry = models["models"]["iris-v1"]
    return {
        "cache_dir": cache_dir,
        "model_uri": str(models["dir"] / entry["file"]),
        "sha256": entry["sha256"],
        "format": "sklearn",
        "feature_schema": str(models["dir"] / models["feature_schema"]),
    }


def test_spark_scores_as_the_batch_cli_does(
    spark: Any, models: dict[str, Any], data: Path, cache_dir: str, tmp_path: Path
) -> None:
    from rollwise_serving.spark import score  # noqa: PLC0415

    out = tmp_path / "cli"
    [shard] = run_shards(batch_args(models, data, out), 1)
    assert shard.code == 0, shard.stderr
    cli = {row["id"]: row for row in read_parts(out).to_pylist()}
    cli_rejects = {r["values"]["id"]: r for r in read_rejects(out)}

    df = spark.read.parquet(str(data)).repartition(4)
    scored = score(df, **model_options(models, cache_dir), keep=["id", "note"])
    assert scored.columns == ["id", "note", "label", *PROBABILITIES, "rejection"]
    rows = {row["id"]: row.asDict() for row in scored.collect()}
    assert len(rows) == ROWS, "every input row is in the result, scored or rejected"

    accepted = {i: r for i, r in rows.items() if r["rejection"] is None}
    assert accepted.keys() == cli.keys()
    assert all(accepted[i]["label"] == cli[i]["label"] for i in cli)
    ours = np.array([[accepted[i][p] for p in PROBABILITIES] for i in sorted(cli)])
    theirs = np.array([[cli[i][p] for p in PROBABILITIES] for i in sorted(cli)])
    assert np.array_equal(ours, theirs)
    assert all(accepted[i]["note"] == cli[i]["note"] for i in cli)

    rejected = {i: r for i, r in rows.items() if r["rejection"] is not None}
    assert rejected.keys() == cli_rejects.keys() == set(BAD)
    for i, row in rejected.items():
        feature, _, message = BAD[i]
        # the CLI's message without its row number: a Spark row has none of its own
        assert row["rejection"] == f"{feature}: {message.split('): ', 1)[1]}"
        assert row["label"] is None and all(row[p] is None for p in PROBABILITIES)


def test_each_python_worker_loads_the_artifact_once(
    spark: Any, models: dict[str, Any], data: Path, cache_dir: str
) -> None:
    import pandas as pd  # noqa: PLC0415
    from rollwise_serving.spark import model_options as spark_model_options  # noqa: PLC0415
    from rollwise_serving.spark import score  # noqa: PLC0415

    df = spark.read.parquet(str(data)).repartition(8)
    options = model_options(models, cache_dir)
    assert score(df, **options, keep=["id"]).filter("rejection IS NULL").count() == ROWS - len(BAD)
    shipped = spark_model_options(**options)

    def loads(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import rollwise_serving.spark as module  # noqa: PLC0415

        for frame in batches:
            module.scorer(shipped).score({}, 0)  # what score's batches do first, in this worker
            yield pd.DataFrame({"pid": [os.getpid()], "loads": [module.LOADS], "rows": [len(frame)]})

    seen = df.mapInPandas(loads, "pid long, loads long, rows long").collect()
    assert sum(row["rows"] for row in seen) == ROWS and len(seen) >= 8
    per_worker = {row["pid"]: row["loads"] for row in seen}
    assert set(per_worker.values()) == {1}, per_worker
    assert len(per_worker) <= 2, "local[2] runs two Python workers"


def test_a_wrong_digest_is_refused_on_the_driver(
    spark: Any, models: dict[str, Any], data: Path, cache_dir: str
) -> None:
    from rollwise_serving.batch import PermanentError  # noqa: PLC0415
    from rollwise_serving.spark import score  # noqa: PLC0415

    options = {**model_options(models, cache_dir), "sha256": "cd" * 32}
    with pytest.raises(
        PermanentError, match=r"^model not loaded: sha256 mismatch for .*the pinned one is (cd){32}; refusing"
    ):
        score(spark.read.parquet(str(data)), **options)
