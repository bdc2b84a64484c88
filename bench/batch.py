"""Batch scoring throughput (#20): rows/s per core of each path against the model's own ceiling.

    .venv/bin/python bench/batch.py [--rows 1000000] [--online-rows 20000]

The same Iris rows (tests/serving/test_batch.py's ``iris_table``, three of them broken so the
rejects path runs) are scored by the committed scikit-learn model (examples/models/iris-v1.joblib)
four ways, all on one core's worth of threads (``OMP_NUM_THREADS=1``, threadpoolctl in process):

- ceiling: ``runtime.predict`` in this process on the rows already in memory, 65536 at a time
  (``predict_proba`` and the label; no I/O, no checks);
- ``rollwise-batch``: one shard reading the Parquet file and writing its part, as a process (its
  CPU includes Python's and the libraries' start-up, about 3 s) and as ``score_shard`` called in
  this process (the same shard: list, load, read, check, predict, write; no start-up), and
  where that shard's CPU goes, by stage (its runs again with each stage's method in a timer);
- Spark: ``rollwise_serving.spark.score`` on ``local[1]``, reading and writing Parquet, after a
  warm-up job loaded the model in the Python worker (CPU of the JVM and its Python workers);
- the online server, ``rollwise-serve`` with one worker, sent single-row and 64-row OIP requests
  one after another over a keep-alive connection (server CPU only; the client is not counted).

Per core = rows / CPU seconds of the path's processes. Prints a table and the ratios to the ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "serving-image"))

import make_example_models  # noqa: E402 - serving-image is not a package

from tests.serving.test_batch import iris_table  # noqa: E402 - the tests' data, so the bench scores the same

CACHE = Path(os.environ.get("ROLLWISE_CACHE", Path.home() / ".cache" / "rollwise"))
WORK = CACHE / "bench-work" / "batch"
BIN = REPO / ".venv" / "bin"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
REPEATS = 3
"""In-process measurements take the best of this many runs: a busy machine only ever adds."""
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of ``root``'s descendants (not itself), each with its waited-for children:
    the JVM and the Python workers it forks, for Spark."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        cpu[pid] = sum(int(f) for f in fields[11:15]) / tick
    total = 0.0
    for pid, seconds in cpu.items():
        p = parents.get(pid)
        while p is not None and p not in (0, 1):
            if p == root:
                total += seconds
                break
            p = parents.get(p)
    return total


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ceiling(model: dict[str, Any], table: Any) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``runtime.predict`` over every row, 65536 at a time."""
    from rollwise_contract.model import ModelFormat  # noqa: PLC0415
    from rollwise_serving.protocol import InferInput  # noqa: PLC0415
    from rollwise_serving.runtimes import load_runtime  # noqa: PLC0415

    runtime = load_runtime(ModelFormat.SKLEARN, model["path"])
    matrix = np.nan_to_num(np.column_stack([table[f].to_numpy(zero_copy_only=False) for f in FEATURES]))
    chunks = [
        runtime.prepare([InferInput("input-0", "FP64", part.shape, part)])
        for part in (matrix[i : i + 65536] for i in range(0, len(matrix), 65536))
    ]
    runs = []
    with threadpool_limits(1):
        runtime.predict(chunks[0])  # warm
        for _ in range(REPEATS):
            cpu, wall = time.process_time(), time.perf_counter()
            for prepared in chunks:
                runtime.predict(prepared)
            runs.append((time.process_time() - cpu, time.perf_counter() - wall))
    return min(runs)


def batch_in_process(model: dict[str, Any], data: Path, out: Path) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``score_shard``, rollwise-batch's whole shard (list, load,
    read, check, predict, write, rename) without the process's start-up: the best of a few runs
    (a busy machine only ever adds)."""
    from rollwise_serving.batch import Summary, parse_batch_settings, score_shard  # noqa: PLC0415

    runs = []
    with threadpool_limits(1):
        for _ in range(REPEATS):
            shutil.rmtree(out, ignore_errors=True)
            settings = parse_batch_settings(cli_args(model, data, out), {})
            cpu, wall = time.process_time(), time.perf_counter()
            score_shard(settings, Summary(0, 1))
            runs.append((time.process_time() - cpu, time.perf_counter() - wall))
    return min(runs)


STAGES = (
    ("read", "Parquet read of the shard's columns (arrow)"),
    ("check_rows", "feature-schema checks (SchemaChecker.check_rows)"),
    ("predict", "runtime.predict (the model)"),
    ("arrow", "outputs to arrow (labels via their class index)"),
    ("write", "Parquet write of the part (arrow)"),
    ("commit", "part closed, fsynced, renamed"),
)


def shard_stages(model: dict[str, Any], data: Path, out: Path) -> tuple[float, dict[str, float]]:
    """Where ``score_shard``'s CPU goes: (total CPU seconds, CPU seconds by stage) of its fastest
    of a few runs, each stage timed by wrapping the method that does it (``Reader._chunks``'
    batches, ``check_rows``, ``predict``, ``Scorer.arrow``, ``PartWriter.write``/``commit``)."""
    from rollwise_serving import batch, features  # noqa: PLC0415
    from rollwise_serving.runtimes import sklearn  # noqa: PLC0415

    spent: dict[str, float] = {}

    def timed(owner: Any, name: str, stage: str) -> None:
        inner = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[stage] = spent.get(stage, 0.0) + time.process_time() - started

        setattr(owner, name, wrapper)

    def timed_batches(inner: Any) -> Any:
        def chunks(*args: Any) -> Any:
            batches = inner(*args)
            while True:
                started = time.process_time()
                item = next(batches, None)
                spent["read"] = spent.get("read", 0.0) + time.process_time() - started
                if item is None:
                    return
                yield item

        return chunks

    saved = [
        (features.SchemaChecker, "check_rows"),
        (sklearn.SklearnRuntime, "predict"),
        (batch.Scorer, "arrow"),
        (batch.PartWriter, "write"),
        (batch.PartWriter, "commit"),
        (batch.Reader, "_chunks"),
    ]
    originals = [(owner, name, getattr(owner, name)) for owner, name in saved]
    for (owner, name), stage in zip(saved[:-1], [s for s, _ in STAGES if s != "read"], strict=True):
        timed(owner, name, stage)
    batch.Reader._chunks = timed_batches(batch.Reader._chunks)  # type: ignore[method-assign]
    runs = []
    try:
        with threadpool_limits(1):
            for _ in range(REPEATS):
                shutil.rmtree(out, ignore_errors=True)
                spent.clear()
                settings = batch.parse_batch_settings(cli_args(model, data, out), {})
                started = time.process_time()
                batch.score_shard(settings, batch.Summary(0, 1))
                runs.append((time.process_time() - started, dict(spent)))
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
    return min(runs, key=lambda run: run[0])


def batch_cli(model: dict[str, Any], data: Path, out: Path) -> tuple[float, float, dict[str, Any]]:
    """(CPU seconds, wall seconds, summary) of one ``rollwise-batch`` shard over ``data``."""
    shutil.rmtree(out, ignore_errors=True)
    argv = [str(BIN / "rollwise-batch"), *cli_args(model, data, out)]
    cpu, wall = children_cpu(), time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **ONE_THREAD}, check=False)
    cpu, wall = children_cpu() - cpu, time.perf_counter() - wall
    if done.returncode != 0:
        raise RuntimeError(f"rollwise-batch exited {done.returncode}: {done.stderr[-2000:]}")
    return cpu, wall, json.loads(done.stdout.splitlines()[-1])


def cli_args(model: dict[str, Any], data: Path, out: Path) -> list[str]:
    return [
        "--model-uri",
        str(model["path"]),
        "--sha256",
        model["sha256"],
        "--feature-schema",
        str(model["schema"]),
        "--input",
        str(data),
        "--output",
        str(out),
        "--keep",
        "id",
        "--cache-dir",
        str(WORK / "cache"),
        "--log-level",
        "warning",
    ]


def spark_path(model: dict[str, Any], data: Path, out: Path, rows: int) -> tuple[float, float]:
    """(CPU seconds of the JVM and its Python workers, wall seconds) of scoring ``data`` into Parquet."""
    os.environ.update(ONE_THREAD)
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession  # noqa: PLC0415
    from rollwise_serving.spark import score  # noqa: PLC0415

    spark = (
        SparkSession.builder.master("local[1]")
        .config("spark.ui.enabled", "false")
        # loopback only: Spark would otherwise pick the host's first interface address
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    options = {
        "model_uri": str(model["path"]),
        "sha256": model["sha256"],
        "feature_schema": str(model["schema"]),
        "cache_dir": str(WORK / "cache"),
        "keep": ["id"],
    }
    try:
        df = spark.read.parquet(str(data))
        score(df.limit(1000), **options).write.mode("overwrite").parquet(str(out) + "-warm-up")
        cpu, wall = tree_cpu_seconds(os.getpid()), time.perf_counter()
        score(df, **options).write.mode("overwrite").parquet(str(out))
        cpu, wall = tree_cpu_seconds(os.getpid()) - cpu, time.perf_counter() - wall
        written = spark.read.parquet(str(out)).count()
        if written != rows:
            raise RuntimeError(f"Spark wrote {written} rows of {rows}")
        return cpu, wall
    finally:
        spark.stop()


def online(model: dict[str, Any], table: Any, rows: int, batch: int) -> tuple[float, float]:
    """(server CPU seconds, wall seconds) of ``rows`` rows sent ``batch`` per request."""
    from tests.serving.conftest import free_port  # noqa: PLC0415

    port = free_port()
    argv = [
        str(BIN / "rollwise-serve"),
        "--model-uri",
        str(model["path"]),
        "--sha256",
        model["sha256"],
        "--name",
        "iris",
        "--version",
        "v1",
        "--feature-schema",
        str(model["schema"]),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--cache-dir",
        str(WORK / "cache"),
    ]
    matrix = np.nan_to_num(
        np.column_stack([table[f].to_numpy(zero_copy_only=False)[:rows] for f in FEATURES])
    )
    matrix = np.clip(matrix, [3.0, 1.5, 0.5, 0.0], [9.0, 5.5, 8.0, 3.0])  # within the schema: no 422s
    bodies = [
        json.dumps(
            {"inputs": [{"name": "input-0", "shape": [len(p), 4], "datatype": "FP64", "data": p.tolist()}]}
        ).encode()
        for p in (matrix[i : i + batch] for i in range(0, len(matrix), batch))
    ]
    log_file = (WORK / "serve.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, **ONE_THREAD})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"rollwise-serve not ready; see {WORK / 'serve.log'}")
            time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=10) as client:
            for body in bodies[:50]:  # warm
                client.post("/v2/models/iris/infer", content=body)
            cpu, wall = process_cpu(proc.pid), time.perf_counter()
            for body in bodies:
                answer = client.post("/v2/models/iris/infer", content=body)
                if answer.status_code != 200:
                    raise RuntimeError(f"the server answered {answer.status_code}: {answer.text[:300]}")
            return process_cpu(proc.pid) - cpu, time.perf_counter() - wall
    finally:
        proc.terminate()
        proc.wait(15)
        log_file.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--online-rows", type=int, default=20_000)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    manifest = make_example_models.committed_manifest()
    entry = manifest["models"]["iris-v1"]
    model = {
        "path": make_example_models.COMMITTED / entry["file"],
        "sha256": entry["sha256"],
        "schema": make_example_models.COMMITTED / manifest["feature_schema"],
    }
    data = WORK / f"iris-{args.rows}.parquet"
    table = iris_table(args.rows, seed=3)
    if not data.exists():
        pq.write_table(table, data)

    log("ceiling: runtime.predict in process")
    ceiling_cpu, ceiling_wall = ceiling(model, table)
    log("rollwise-batch: a process, then score_shard in process")
    batch_cpu, batch_wall, summary = batch_cli(model, data, WORK / "out-batch")
    shard_cpu, shard_wall = batch_in_process(model, data, WORK / "out-shard")
    stages_cpu, stages = shard_stages(model, data, WORK / "out-stages")
    log("Spark local[1]")
    spark_cpu, spark_wall = spark_path(model, data, WORK / "out-spark", args.rows)
    log("online, one row per request")
    one_cpu, one_wall = online(model, table, args.online_rows, 1)
    log("online, 64 rows per request")
    many_cpu, many_wall = online(model, table, args.online_rows * 10, 64)

    ceiling_rate = args.rows / ceiling_cpu
    lines = [
        ("ceiling: runtime.predict in process, no I/O", args.rows, ceiling_cpu, ceiling_wall),
        ("rollwise-batch, Parquet, whole process", args.rows, batch_cpu, batch_wall),
        ("rollwise-batch's score_shard, Parquet, no start-up", args.rows, shard_cpu, shard_wall),
        ("Spark local[1], Parquet (JVM + Python worker)", args.rows, spark_cpu, spark_wall),
        ("online rollwise-serve, 1 row per request", args.online_rows, one_cpu, one_wall),
        ("online rollwise-serve, 64 rows per request", args.online_rows * 10, many_cpu, many_wall),
    ]
    print(f"{'path':<52} {'rows':>9} {'CPU s':>7} {'wall s':>7} {'rows/s/core':>12} {'vs ceiling':>10}")
    for name, rows, cpu, wall in lines:
        rate = rows / cpu
        print(f"{name:<52} {rows:>9} {cpu:>7.2f} {wall:>7.2f} {rate:>12,.0f} {rate / ceiling_rate:>9.1%}")
    print(
        f"(rollwise-batch's own summary: {summary['rowsPerSecond']:,.0f} rows/s over {summary['seconds']} s)"
    )
    print(f"\nWhere score_shard's CPU goes (fastest of {REPEATS} timed runs, {stages_cpu:.3f} s in all):")
    print(f"{'stage':<52} {'ns/row':>7} {'share':>6}")
    rest = stages_cpu - sum(stages.values())
    for stage, label in [*STAGES, ("rest", "the rest: list, load, chunk glue, rejects, marker")]:
        seconds = rest if stage == "rest" else stages.get(stage, 0.0)
        print(f"{label:<52} {seconds / args.rows * 1e9:>7.1f} {seconds / stages_cpu:>6.1%}")
    print(f"{'ceiling (runtime.predict alone, as above)':<52} {ceiling_cpu / args.rows * 1e9:>7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
