"""``rollwise-batch`` as an Indexed Job's pods run it: real processes on real files (#20).

Every shard is a ``rollwise-batch`` subprocess; inputs are Parquet and CSV files written here,
served from disk, over HTTP (``python -m http.server``) and from moto's S3 server. The union of
the shards' parts must be the input's rows exactly once, predictions must equal the online
server's for the same rows, and every bad row must be in a rejects file with the server's message.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from tests.serving.conftest import (
    REPO,
    S3,
    ServerFactory,
    free_port,
    model_args,
    schema_args,
    stop,
    wait_for,
)

BATCH = REPO / ".venv" / "bin" / "rollwise-batch"
ROWS = 2000
BAD = {
    7: ("sepal_width", 99.0, "rows[7][1] (sepal_width): 99 is outside [1.5, 5.5]"),
    1234: ("petal_length", None, "rows[1234][2] (petal_length): missing; this feature is required"),
    1999: ("petal_width", -1.0, "rows[1999][3] (petal_width): -1 is outside [0, 3]"),
}
"""Rows of ``iris_table`` that break the Iris schema, and the message each must be rejected with."""
PROBABILITIES = ["probability_setosa", "probability_versicolor", "probability_virginica"]


def iris_table(rows: int = ROWS, seed: int = 0, first_id: int = 0) -> pa.Table:
    """Iris-like rows with an ``id`` and a ``note`` column, and the ``BAD`` rows broken."""
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {
        "id": np.arange(first_id, first_id + rows),
        "sepal_length": rng.uniform(4.3, 7.9, rows).round(2),
        "sepal_width": rng.uniform(2.0, 4.4, rows).round(2),
        "petal_length": rng.uniform(1.0, 6.9, rows).round(2),
        "petal_width": rng.uniform(0.1, 2.5, rows).round(2),
        "note": [f"n{i}" for i in range(rows)],
    }
    table = pa.table(columns)
    for row, (feature, value, _) in BAD.items():
        if row < rows:
            values = table[feature].to_pylist()
            values[row] = value
            table = table.set_column(
                table.schema.get_field_index(feature), feature, pa.array(values, pa.float64())
            )
    return table


@dataclass
class Shard:
    code: int
    stdout: str
    stderr: str
    summary: dict[str, Any]
    """The termination message the shard wrote."""


def batch_args(models: dict[str, Any], data: str | Path, out: Path, *extra: str) -> list[str]:
    return [
        *model_args(models, "iris-v1")[:6],
        "--feature-schema",
        str(models["dir"] / models["feature_schema"]),
        "--input",
        str(data),
        "--output",
        str(out),
        "--cache-dir",
        str(out.parent / "cache"),
        "--keep",
        "id,note",
        *extra,
    ]


def run_shards(
    args: Sequence[str],
    count: int,
    *,
    indexes: Sequence[int] | None = None,
    env: dict[str, str] | None = None,
) -> list[Shard]:
    """Shards ``indexes`` of ``count``, run at once as an Indexed Job runs them (the index by
    ``JOB_COMPLETION_INDEX``, as the Job sets it); each writes its own termination log."""
    out = Path(args[args.index("--output") + 1])
    procs = []
    for i in indexes if indexes is not None else range(count):
        log = out.parent / f"termination-{out.name}-{i}"
        log.unlink(missing_ok=True)
        argv = [str(BATCH), *args, "--shard-count", str(count), "--termination-log", str(log)]
        full_env = {**os.environ, **(env or {}), "JOB_COMPLETION_INDEX": str(i)}
        procs.append(
            (log, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env))
        )
    shards = []
    for log, proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        summary = json.loads(log.read_text()) if log.exists() else {}
        shards.append(Shard(proc.returncode, stdout.decode(), stderr.decode(), summary))
    return shards


def read_parts(out: Path, fmt: str = "parquet") -> pa.Table:
    parts = sorted(out.glob(f"part-*.{fmt}"))
    assert parts, f"no parts in {out}: {sorted(p.name for p in out.iterdir())}"
    read = pq.read_table if fmt == "parquet" else pa_csv.read_csv
    return pa.concat_tables([read(p) for p in parts])


def read_rejects(out: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line) for p in sorted(out.glob("rejects-*.jsonl")) for line in p.read_text().splitlines()
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    table = iris_table()
    pq.write_table(table, root / "iris.parquet", row_group_size=300)
    pa_csv.write_csv(table, root / "iris.csv")
    return root


@pytest.fixture(scope="module")
def parquet_run(
    models: dict[str, Any], data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[Shard]]:
    out = tmp_path_factory.mktemp("parquet") / "out"
    return out, run_shards(batch_args(models, data / "iris.parquet", out), 4)


def test_four_shards_score_every_parquet_row_once_and_reject_the_bad_ones(
    parquet_run: tuple[Path, list[Shard]],
) -> None:
    out, shards = parquet_run
    assert [s.code for s in shards] == [0, 0, 0, 0], [s.stderr[-2000:] for s in shards]
    scored = read_parts(out)
    ids = scored["id"].to_pylist()
    assert len(ids) == len(set(ids)), "a row was scored twice"
    assert sorted(ids) == sorted(set(range(ROWS)) - set(BAD))
    assert scored.column_names == ["id", "note", "label", *PROBABILITIES]
    assert set(scored["label"].to_pylist()) <= {"setosa", "versicolor", "virginica"}
    rejects = read_rejects(out)
    assert sorted((r["row"], r["message"]) for r in rejects) == sorted(
        (row, m) for row, (_, _, m) in BAD.items()
    )
    by_row = {r["row"]: r for r in rejects}
    assert by_row[7]["values"]["sepal_width"] == 99.0 and by_row[7]["values"]["id"] == 7
    assert by_row[1234]["values"]["petal_length"] is None
    assert by_row[7]["file"] == "iris.parquet"
    assert by_row[7]["problems"] == [
        {"feature": "sepal_width", "problem": "out_of_range", "message": BAD[7][2]}
    ]
    # the termination messages: one per shard, rows adding up, the same as each done marker
    summaries = [s.summary for s in shards]
    assert [s["shard"] for s in summaries] == [0, 1, 2, 3]
    assert {s["status"] for s in summaries} == {"succeeded"}
    assert sum(s["rowsIn"] for s in summaries) == ROWS
    assert sum(s["rowsRejected"] for s in summaries) == len(BAD)
    assert sum(s["rowsOut"] for s in summaries) == ROWS - len(BAD)
    assert [s["rowsIn"] for s in summaries] == [500, 500, 500, 500]
    for s in summaries:
        marker = json.loads((out / f"done-{s['shard']:05d}.json").read_text())
        assert marker["fingerprint"] == s["fingerprint"] and marker["rowsIn"] == s["rowsIn"]
        assert s["part"] == f"part-{s['shard']:05d}.parquet" and s["rowsPerSecond"] > 0
    assert not list(out.glob(".*")), "temporary files left behind"


def test_predictions_equal_the_online_servers_and_the_runtimes_in_process(
    parquet_run: tuple[Path, list[Shard]], models: dict[str, Any], servers: ServerFactory
) -> None:
    out, _ = parquet_run
    scored = read_parts(out).sort_by("id")
    sample = [i for i in range(0, ROWS, 97) if i not in BAD]
    source = iris_table().sort_by("id")
    features = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    rows = [[source[f][i].as_py() for f in features] for i in sample]
    server = servers.start(*model_args(models, "iris-v1"), *schema_args(models))
    body = {"inputs": [{"name": "input-0", "shape": [len(rows), 4], "datatype": "FP64", "data": rows}]}
    answer = server.post("/v2/models/iris/infer", json=body)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    by_id = {row["id"]: row for row in scored.to_pylist()}
    got_labels = [by_id[i]["label"] for i in sample]
    got_probabilities = [[by_id[i][p] for p in PROBABILITIES] for i in sample]
    assert got_labels == outputs["label"]["data"]
    server_probabilities = np.asarray(outputs["probabilities"]["data"]).reshape(len(sample), 3)
    assert np.array_equal(np.asarray(got_probabilities), server_probabilities)
    # and the model's own answer, in this process
    import joblib  # noqa: PLC0415

    model = joblib.load(models["dir"] / models["models"]["iris-v1"]["file"])
    assert np.array_equal(model.predict_proba(np.asarray(rows)), np.asarray(got_probabilities))


def test_csv_input_and_output_give_the_parquet_runs_predictions(
    parquet_run: tuple[Path, list[Shard]], models: dict[str, Any], data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shards = run_shards(batch_args(models, data / "iris.csv", out, "--output-format", "csv"), 2)
    assert [s.code for s in shards] == [0, 0], [s.stderr[-2000:] for s in shards]
    assert [s.summary["rowsIn"] for s in shards] == [1000, 1000]
    from_csv = read_parts(out, "csv").sort_by("id")
    from_parquet = read_parts(parquet_run[0]).sort_by("id")
    assert from_csv["id"].to_pylist() == from_parquet["id"].to_pylist()
    assert from_csv["label"].to_pylist() == from_parquet["label"].to_pylist()
    for p in PROBABILITIES:
        assert np.allclose(from_csv[p].to_numpy(), from_parquet[p].to_numpy(), rtol=1e-12, atol=0)
    assert sorted(r["message"] for r in read_rejects(out)) == sorted(m for _, _, m in BAD.values())


def test_a_csv_value_that_is_no_number_is_rejected_with_the_servers_message(
    models: dict[str, Any], tmp_path: Path
) -> None:
    data = tmp_path / "odd.csv"
    data.write_text(
        "id,note,sepal_length,sepal_width,petal_length,petal_width\n"
        "1,a,5.1,3.5,1.4,0.2\n2,b,abc,3.5,1.4,0.2\n3,c,5.1,inf,1.4,0.2\n"
    )
    out = tmp_path / "out"
    [shard] = run_shards(batch_args(models, data, out), 1)
    assert shard.code == 0, shard.stderr
    assert read_parts(out)["id"].to_pylist() == [1]
    assert [(r["row"], r["message"]) for r in read_rejects(out)] == [
        (1, "rows[1][0] (sepal_length): 'abc' is not a finite number; send a number"),
        (2, "rows[2][1] (sepal_width): 'inf' is not a finite number; send a number"),
    ]


def test_a_rerun_skips_finished_shards_and_scores_the_others(
    models: dict[str, Any], data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = batch_args(models, data / "iris.parquet", out)
    first = run_shards(args, 2, indexes=[0])
    assert first[0].code == 0, first[0].stderr
    part = out / "part-00000.parquet"
    written = part.stat().st_mtime_ns
    again = run_shards(args, 2)
    assert [s.code for s in again] == [0, 0]
    assert [s.summary["status"] for s in again] == ["skipped", "succeeded"]
    assert again[0].summary["rowsIn"] == first[0].summary["rowsIn"] == 1000
    assert part.stat().st_mtime_ns == written, "a finished shard was scored again"
    assert "finished by an earlier run" in again[0].stderr
    ids = read_parts(out)["id"].to_pylist()
    assert sorted(ids) == sorted(set(range(ROWS)) - set(BAD))
    # another model digest pinned for the same shard is another job: it is not skipped
    other = [*args]
    other[other.index("--sha256") + 1] = "0" * 64
    [refused] = run_shards(other, 2, indexes=[0])
    assert refused.code == 3 and refused.summary["status"] == "failed"


def slow_shard(models: dict[str, Any], tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path, Path, Path]:
    """A shard of 20 000 rows in 2-row chunks (slow enough to be stopped half-way), once it is
    writing its part: (process, data, output dir, termination log)."""
    data = tmp_path / "big.parquet"
    pq.write_table(iris_table(20_000, seed=1), data, row_group_size=1000)
    out = tmp_path / "out"
    log = tmp_path / "termination"
    argv = [str(BATCH), *batch_args(models, data, out, "--chunk-rows", "2"), "--termination-log", str(log)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(
            lambda: any(out.glob(".part-00000.parquet.*.tmp")), 60, "the shard to start writing its part"
        )
    except BaseException:
        stop(proc)
        raise
    return proc, data, out, log


def test_a_killed_shard_leaves_nothing_that_looks_done_and_its_rerun_no_duplicates(
    models: dict[str, Any], tmp_path: Path
) -> None:
    proc, data, out, _ = slow_shard(models, tmp_path)
    try:
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        stop(proc)
    assert not (out / "part-00000.parquet").exists() and not (out / "done-00000.json").exists()
    [shard] = run_shards(batch_args(models, data, out), 1)
    assert shard.code == 0 and shard.summary["status"] == "succeeded", shard.stderr
    ids = read_parts(out)["id"].to_pylist()
    assert len(ids) == len(set(ids)) == 20_000 - len(BAD)
    assert sorted(p.name for p in out.iterdir()) == [
        "done-00000.json",
        "part-00000.parquet",
        "rejects-00000.jsonl",
    ]


def test_sigterm_stops_a_shard_at_once_with_a_retryable_exit_and_nothing_left_behind(
    models: dict[str, Any], tmp_path: Path
) -> None:
    """A deleted, evicted or drained pod gets SIGTERM: the scorer (PID 1 in its container, where
    SIGTERM is otherwise ignored) stops with exit 1, which the Job counts and retries."""
    proc, _, out, log = slow_shard(models, tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(10)
    finally:
        stop(proc)
    assert code == 1
    report = json.loads(log.read_text())
    assert report["status"] == "failed" and "SIGTERM" in report["error"], report
    assert list(out.iterdir()) == []


def test_a_corrupt_file_fails_only_its_shard_naming_the_file(models: dict[str, Any], tmp_path: Path) -> None:
    data = tmp_path / "dataset"
    data.mkdir()
    for n in range(4):
        pq.write_table(iris_table(100, seed=n, first_id=n * 100), data / f"day-{n}.parquet")
    (data / "_SUCCESS").write_text("")  # a marker Spark writes: not data
    broken = data / "day-2.parquet"
    broken.write_bytes(broken.read_bytes()[:-200])  # truncated, as by an interrupted upload
    out = tmp_path / "out"
    # 4 files, 2 shards: files 0 and 2 to shard 0, 1 and 3 to shard 1
    shards = run_shards(batch_args(models, data, out), 2)
    assert [s.code for s in shards] == [3, 0], [s.stderr[-1500:] for s in shards]
    failed = shards[0].summary
    assert failed["status"] == "failed" and failed["shard"] == 0
    assert failed["error"].startswith("input file day-2.parquet is not a readable parquet file")
    assert "replace or remove it" in failed["error"]
    assert "input file day-2.parquet is not a readable parquet file" in shards[0].stderr
    # day-0, scored before day-2 failed, is not left as a part that looks done
    assert sorted(p.name for p in out.iterdir()) == [
        "done-00001.json",
        "part-00001.parquet",
        "rejects-00001.jsonl",
    ]
    ids = sorted(read_parts(out)["id"].to_pylist())
    assert ids == sorted(i for n in (1, 3) for i in range(n * 100, n * 100 + 100) if i - n * 100 not in BAD)


def test_a_wrong_digest_is_refused_before_anything_is_scored(
    models: dict[str, Any], data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = batch_args(models, data / "iris.parquet", out)
    args[args.index("--sha256") + 1] = "ab" * 32
    [shard] = run_shards(args, 1)
    assert shard.code == 3
    assert shard.summary["error"].startswith("model not loaded: sha256 mismatch for ")
    assert f"the pinned one is {'ab' * 32}; refusing to load it" in shard.summary["error"]
    assert not list(out.glob("part-*")) and shard.summary["rowsIn"] == 0


def test_bad_settings_exit_2_naming_every_flag(models: dict[str, Any], data: Path, tmp_path: Path) -> None:
    argv = [
        *batch_args(models, data / "iris.parquet", tmp_path / "out"),
        "--shard-index",
        "4",
        "--chunk-rows",
        "0",
    ]
    at = argv.index("--sha256")
    del argv[at : at + 2]
    done = subprocess.run(
        [str(BATCH), *argv, "--shard-count", "4"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert (
        "rollwise-batch: error: --chunk-rows (env ROLLWISE_CHUNK_ROWS): '0' is not valid; "
        "use an integer from 1 to 16777216" in lines
    )
    assert "rollwise-batch: error: --shard-index 4 is not a shard of --shard-count 4; use 0 to 3" in lines
    assert any(
        line.startswith(
            "rollwise-batch: error: --sha256 (env ROLLWISE_SHA256) is required for --format sklearn"
        )
        for line in lines
    )


@pytest.fixture
def http_data(data: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import httpx  # noqa: PLC0415

    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(url + "/iris.parquet", timeout=1).status_code == 200, 20, "http.server")
    yield url
    stop(proc)


def test_an_http_input_is_downloaded_and_scored(
    parquet_run: tuple[Path, list[Shard]], models: dict[str, Any], http_data: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shards = run_shards(batch_args(models, f"{http_data}/iris.parquet", out), 1)
    assert [s.code for s in shards] == [0], [s.stderr[-1500:] for s in shards]
    assert read_parts(out).sort_by("id").equals(read_parts(parquet_run[0]).sort_by("id"))


def test_an_s3_prefix_is_listed_and_each_shard_fetches_its_files(
    models: dict[str, Any], s3_server: S3, aws_env: dict[str, str], tmp_path: Path
) -> None:
    import boto3  # noqa: PLC0415

    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="data")
    for n in range(3):
        path = tmp_path / f"f{n}.parquet"
        pq.write_table(iris_table(100, seed=n, first_id=n * 100), path)
        client.upload_file(str(path), "data", f"scores/day=1/f{n}.parquet")
    client.put_object(Bucket="data", Key="scores/day=1/_SUCCESS", Body=b"")
    client.put_object(Bucket="data", Key="other/f9.parquet", Body=b"not under the prefix")
    out = tmp_path / "out"
    args = batch_args(models, "s3://data/scores/day=1/", out, "--s3-endpoint", s3_server.endpoint)
    shards = run_shards(args, 2, env=aws_env)
    assert [s.code for s in shards] == [0, 0], [s.stderr[-1500:] for s in shards]
    # 3 files, 2 shards: each file in 1 piece, files 0 and 2 to shard 0, file 1 to shard 1
    assert [s.summary["rowsIn"] for s in shards] == [200, 100]
    ids = sorted(read_parts(out)["id"].to_pylist())
    assert ids == sorted(i for n in range(3) for i in range(n * 100, n * 100 + 100) if i - n * 100 not in BAD)
    assert {r["file"] for r in read_rejects(out)} == {"f0.parquet", "f1.parquet", "f2.parquet"}


def test_features_without_a_schema_score_as_the_schema_does(models: dict[str, Any], tmp_path: Path) -> None:
    """``--features`` (no schema): the same columns, read as bounded-less floats, in process."""
    from rollwise_serving.batch import load_scorer, parse_batch_settings  # noqa: PLC0415

    def scorer(*how: str) -> Any:
        args = [*batch_args(models, tmp_path / "unused", tmp_path / "out")]
        at = args.index("--feature-schema")
        args[at : at + 2] = how
        return load_scorer(parse_batch_settings(args, {}))

    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    table = iris_table(50)
    columns = {n: table[n].to_numpy(zero_copy_only=False) for n in names}
    plain = scorer("--features", ",".join(names)).score(columns, 50)
    schema = scorer("--feature-schema", str(models["dir"] / models["feature_schema"])).score(columns, 50)
    assert plain.ok.all(), "without a schema, 99 is a float like any other"
    assert [p.message for p in schema.problems[7]] == [BAD[7][2]]
    others = np.arange(50) != 7
    for column in ["label", *PROBABILITIES]:
        assert np.array_equal(plain.outputs[column][others], schema.outputs[column])


KEPT_TYPES = {
    "int": (pa.int64(), [1, 2, 3], True),
    "unsigned": (pa.uint32(), [1, 2, 3], True),
    "float": (pa.float32(), [0.5, 1.5, None], True),
    "text": (pa.string(), ["a", None, "c"], True),
    "bytes": (pa.binary(), [b"a", b"b", b"c"], True),
    "flag": (pa.bool_(), [True, False, None], True),
    "day": (pa.date32(), [0, 1, 2], True),
    "utc": (pa.timestamp("us", "UTC"), [0, 1, 2], True),
    "naive": (pa.timestamp("ns"), [0, 1, 2], True),
    # these read back as other types without the arrow schema: the labels go as text instead
    "paris": (pa.timestamp("ms", "Europe/Paris"), [0, 1, 2], False),
    "elapsed": (pa.duration("ms"), [0, 1, 2], False),
    "long text": (pa.large_string(), ["a", "b", "c"], False),
    "list": (pa.list_(pa.int64()), [[1], [], None], False),
}


@pytest.mark.parametrize("kept", sorted(KEPT_TYPES))
def test_a_part_reads_back_with_its_columns_types_whichever_way_its_labels_were_written(
    kept: str, tmp_path: Path
) -> None:
    """Labels go to Parquet as class indexes (no text per row, no arrow schema stored) only when
    every kept column reads back as the same type without that schema; either way a reader gets
    the kept column's own type and values, and the labels as text."""
    from rollwise_serving.batch import LABEL_TYPE, DataFormat, PartWriter  # noqa: PLC0415

    kind, values, plain = KEPT_TYPES[kept]
    schema = pa.schema([pa.field(kept, kind), pa.field("label", pa.string()), pa.field("p", pa.float64())])
    part = PartWriter(tmp_path / "part-00000.parquet", DataFormat.PARQUET, labels=["label"])
    part.open(schema)
    assert part.encodes is plain
    classes = pa.array(["setosa", "versicolor"])
    labels: pa.Array = pa.DictionaryArray.from_arrays(pa.array([1, 0, 1], pa.int32()), classes)
    assert labels.type == LABEL_TYPE
    if not plain:
        labels = labels.cast(pa.string())
    part.write(
        pa.Table.from_arrays([pa.array(values, kind), labels, pa.array([0.1, 0.2, 0.3])], schema=part.schema)
    )
    part.commit()
    back = pq.read_table(tmp_path / "part-00000.parquet")
    assert back.schema.remove_metadata() == schema
    assert back[kept].to_pylist() == pa.array(values, kind).to_pylist()
    assert back["label"].to_pylist() == ["versicolor", "setosa", "versicolor"]
