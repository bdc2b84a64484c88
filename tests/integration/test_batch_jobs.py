"""`ModelBatchJob` on the real cluster (issue 20): examples/batch-job.yaml as written (its claims on
host dirs, its shards on the real node), the operator's Indexed Job scoring Parquet files
on the real node with the batch image's `rollwise-batch`, read and written through hostPath
claims, judged from what the shards wrote and what the ModelBatchJob's status says.

- 1 000 000 rows in 8 files, 4 shards: every good row scored exactly once, every bad row in a
  rejects file with the server's message, predictions equal to the online server's (a real
  `rollwise-serve` on the same artifact) for a sample.
- A shard's pod deleted while it runs is retried (`failures`, a ShardRetried Event) and the
  output has no duplicates; a corrupt file fails its shard by index while the others finish.
- 100 shards on the kwok nodes (whose pods complete at once, without running): the scheduling
  path of a wide job, every index placed, tracked and reported, and `kubectl rollwise batch`."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from kubernetes import client

from e2e import modelstore, paths
from e2e.components import SIMULATED_TAINT_KEY
from tests.conftest import Cluster, wait_until
from tests.integration.conftest import Operator, free_port, kubectl

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.slow]

ROWS = 1_000_000
FILES = 8
EXAMPLE = paths.REPO / "examples" / "batch-job.yaml"
BAD = {
    17: ("sepal_width", 99.0, "(sepal_width): 99 is outside [1.5, 5.5]"),
    400_003: ("petal_width", -1.0, "(petal_width): -1 is outside [0, 3]"),
    999_998: ("petal_length", 42.0, "(petal_length): 42 is outside [0.5, 8]"),
}
"""Rows (by id) that break the Iris schema, and what their rejection must say."""
GROUP = "rollwise.dev"
PLURAL = "modelbatchjobs"


def iris_rows(rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    table = pa.table(
        {
            "id": np.arange(rows, dtype=np.int64),
            "sepal_length": rng.uniform(4.3, 7.9, rows).round(2),
            "sepal_width": rng.uniform(2.0, 4.4, rows).round(2),
            "petal_length": rng.uniform(1.0, 6.9, rows).round(2),
            "petal_width": rng.uniform(0.1, 2.5, rows).round(2),
        }
    )
    for row, (feature, value, _) in BAD.items():
        if row < rows:
            values = table[feature].to_numpy().copy()
            values[row] = value
            table = table.set_column(table.schema.get_field_index(feature), feature, pa.array(values))
    return table


def write_files(root: Path, table: pa.Table, files: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    per = len(table) // files
    for f in range(files):
        pq.write_table(table.slice(f * per, per), root / f"part-{f}.parquet", row_group_size=25_000)


def claim(namespace: str, name: str, host: Path, *, writable: bool) -> None:
    """A hostPath PersistentVolume on the real node's disk (this machine's), bound to claim `name`."""
    mode = "ReadWriteOnce" if writable else "ReadOnlyMany"
    volume = f"{namespace}-{name}"
    items = [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume, "labels": {"rollwise.test/namespace": namespace}},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": [mode],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(host), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": name},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "accessModes": [mode],
                "storageClassName": "",
                "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    ]
    kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    kubectl("-n", namespace, "wait", f"pvc/{name}", "--for=jsonpath={.status.phase}=Bound", "--timeout=60s")


@pytest.fixture
def volumes(namespace: str, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Claims `scoring-data` (read-only) and `scores` (writable by the shards' UID 65532), the
    example's, on host dirs."""
    data, scores = tmp_path / "data", tmp_path / "scores"
    data.mkdir()
    scores.mkdir()
    os.chmod(scores, 0o777)  # the shards run as 65532; the test reads what they wrote
    os.chmod(tmp_path, 0o755)
    claim(namespace, "scoring-data", data, writable=False)
    claim(namespace, "scores", scores, writable=True)
    try:
        yield data, scores
    finally:
        kubectl("delete", "pv", "-l", f"rollwise.test/namespace={namespace}", "--wait=false", check=False)


@pytest.fixture
def claims(
    operator: Operator, batch_image: str, model_store: None, volumes: tuple[Path, Path]
) -> tuple[Path, Path]:
    """What a batch job here needs running: the operator, the batch image in the node, the model
    store; the host dirs behind claims scoring-data and scores."""
    return volumes


def batch_job(name: str, input_dir: str, output_dir: str) -> dict[str, Any]:
    """examples/batch-job.yaml as written (4 shards, 2 at a time, the pinned iris model from the
    model store), named `name`, reading `input_dir` of claim scoring-data and writing `output_dir`
    of claim scores, its shards on the real node."""
    mbj: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    spec = mbj["spec"]
    assert spec["input"]["uri"].startswith("pvc://scoring-data/") and spec["output"]["uri"].startswith(
        "pvc://scores/"
    )
    assert spec["model"]["inline"]["sha256"] == modelstore.sha256_of("iris-v1.joblib")
    mbj["metadata"]["name"] = name
    spec["input"]["uri"] = f"pvc://scoring-data/{input_dir}/"
    spec["output"]["uri"] = f"pvc://scores/{output_dir}"
    spec["nodeSelector"] = {"rollwise.dev/node-kind": "real"}
    return mbj


def get_mbj(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    api = client.CustomObjectsApi(cluster.api)
    obj: dict[str, Any] = api.get_namespaced_custom_object(GROUP, "v1alpha1", namespace, PLURAL, name)
    return obj


def phase(cluster: Cluster, namespace: str, name: str) -> str:
    return str(get_mbj(cluster, namespace, name).get("status", {}).get("phase", ""))


def apply(namespace: str, obj: dict[str, Any]) -> None:
    kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(obj))


def wait_phase(cluster: Cluster, namespace: str, name: str, wanted: str, timeout: float) -> dict[str, Any]:
    try:
        wait_until(
            f"{name} {wanted}", lambda: phase(cluster, namespace, name) in (wanted, "Invalid"), timeout
        )
    except AssertionError as err:
        events = kubectl("-n", namespace, "get", "events", "--sort-by=.lastTimestamp", check=False).stdout
        raise AssertionError(
            f"{err}\nstatus: {get_mbj(cluster, namespace, name).get('status')}\n{events}"
        ) from None
    mbj = get_mbj(cluster, namespace, name)
    assert mbj["status"]["phase"] == wanted, mbj["status"]
    return mbj


def parts(out: Path) -> pa.Table:
    found = sorted(out.glob("part-*.parquet"))
    assert found, f"no parts in {out}: {sorted(p.name for p in out.iterdir())}"
    return pa.concat_tables([pq.read_table(p) for p in found])


def rejects(out: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line) for p in sorted(out.glob("rejects-*.jsonl")) for line in p.read_text().splitlines()
    ]


def online_labels(rows: pa.Table) -> list[str]:
    """The online server's answers for `rows`: a real `rollwise-serve` on the same artifact."""
    port = free_port()
    model = paths.REPO / "examples" / "models" / "iris-v1.joblib"
    argv = [
        str(paths.REPO / ".venv" / "bin" / "rollwise-serve"),
        *("--model-uri", str(model), "--sha256", modelstore.sha256_of("iris-v1.joblib")),
        *("--format", "sklearn", "--name", "iris", "--version", "1.0.0"),
        *("--host", "127.0.0.1", "--port", str(port)),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=1) as resp:
                    return bool(resp.status == 200)
            except OSError:
                return False

        wait_until("rollwise-serve ready", ready, 60)
        features = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
        data = [[float(v) for v in r] for r in zip(*(rows[f].to_pylist() for f in features), strict=True)]
        body = {"inputs": [{"name": "input-0", "shape": [len(data), 4], "datatype": "FP64", "data": data}]}
        req = urllib.request.Request(
            f"{base}/v2/models/iris/infer", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            answer = json.load(resp)
    finally:
        proc.terminate()
        proc.wait(10)
    (label,) = [o for o in answer["outputs"] if o["datatype"] == "BYTES"]
    return [str(v) for v in label["data"]]


def test_a_million_rows_in_four_shards_score_every_row_once_as_the_online_server_does(
    cluster: Cluster, namespace: str, claims: tuple[Path, Path]
) -> None:
    data, scores = claims
    table = iris_rows(ROWS)
    write_files(data / "day1", table, FILES)
    started = time.monotonic()
    apply(namespace, batch_job("nightly", "day1", "run1"))
    mbj = wait_phase(cluster, namespace, "nightly", "Succeeded", 600)
    took = time.monotonic() - started
    status = mbj["status"]
    out = parts(scores / "run1")
    bad_ids = set(BAD)
    # every good row exactly once, every bad row in a rejects file with the server's message
    ids = out["id"].to_numpy()
    assert len(ids) == ROWS - len(BAD) and len(np.unique(ids)) == len(ids)
    assert set(range(ROWS)) - set(ids.tolist()) == bad_ids
    rejected = rejects(scores / "run1")
    assert len(rejected) == len(BAD), rejected
    text = json.dumps(rejected)
    for _, _, message in BAD.values():
        assert message in text, (message, rejected)
    assert status["rowsDone"] == ROWS - len(BAD), status
    assert status["rowsFailed"] == len(BAD), status
    assert [s["phase"] for s in status["shards"]] == ["Succeeded"] * 4, status["shards"]
    # the same predictions as the online server for a sample of rows
    sample_ids = np.random.default_rng(1).choice(ids, 500, replace=False)
    by_id = dict(zip(ids.tolist(), out.column(label_column(out)).to_pylist(), strict=True))
    sample = table.take(pa.array(sample_ids))
    assert [str(by_id[i]) for i in sample_ids.tolist()] == online_labels(sample)
    print(
        f"\nbatch: {ROWS:,} rows in 4 shards scored in {took:.0f}s from apply to Succeeded "
        f"({status.get('rowsPerSecond')} rows/s by the status), {len(BAD)} rejected"
    )


def label_column(out: pa.Table) -> str:
    """The predicted class's column among the parts' columns (the rest: kept `id`, probabilities)."""
    (name,) = [n for n in out.column_names if n != "id" and pa.types.is_string(out.schema.field(n).type)]
    return name


def test_a_deleted_shard_pod_is_retried_without_duplicates_and_a_corrupt_file_fails_only_its_shard(
    cluster: Cluster, namespace: str, claims: tuple[Path, Path]
) -> None:
    data, scores = claims
    # Shard i of 4 scores file i alone. File 0 is large and every shard gets a fifth of a core, so
    # shard 0 is seconds from done when its pod is deleted: at full speed (no CPU limit) it could
    # finish between the delete and its SIGTERM, and report success (one CI run saw failures 0).
    sizes = [1_000_000, 50_000, 50_000, 50_000]
    table = iris_rows(sum(sizes), seed=2)
    (data / "day2").mkdir()
    starts = [sum(sizes[:f]) for f in range(4)]
    for f, (start, size) in enumerate(zip(starts, sizes, strict=True)):
        pq.write_table(table.slice(start, size), data / "day2" / f"part-{f}.parquet", row_group_size=25_000)
    (data / "day2" / "part-2.parquet").write_bytes(b"PAR1 this is not a parquet file PAR1")
    job = batch_job("retry", "day2", "run2")
    job["spec"]["resources"]["limits"]["cpu"] = "200m"
    job["spec"]["resources"]["requests"]["cpu"] = "200m"
    apply(namespace, job)

    def scoring_pod() -> str | None:
        """Shard 0's pod once it is writing its part (the scorer's temporary file is on the claim)."""
        if not any((scores / "run2").glob(".part-00000.parquet.*.tmp")):
            return None
        pods = cluster.core.list_namespaced_pod(
            namespace, label_selector="rollwise.dev/model-batch-job=retry"
        )
        for p in pods.items:
            index = (p.metadata.annotations or {}).get("batch.kubernetes.io/job-completion-index")
            if p.status.phase == "Running" and index == "0":
                return str(p.metadata.name)
        return None

    victim = wait_until("shard 0 scoring", scoring_pod, 300, every=0.1)
    # The scorer stops on SIGTERM with a retryable exit (1), counted against backoffLimitPerIndex
    cluster.core.delete_namespaced_pod(victim, namespace, grace_period_seconds=10)
    mbj = wait_phase(cluster, namespace, "retry", "Failed", 600)
    status = mbj["status"]
    shards = {s["index"]: s for s in status["shards"]}
    assert shards[2]["phase"] == "Failed", shards
    assert "part-2.parquet" in json.dumps(shards[2]), shards[2]
    assert [shards[i]["phase"] for i in (0, 1, 3)] == ["Succeeded"] * 3, shards
    assert shards[0]["failures"] >= 1, shards[0]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Stalled"]["status"] == "True" and "2" in conditions["Stalled"]["message"], conditions
    events = kubectl("-n", namespace, "get", "events", "-o", "json").stdout
    reasons = {e["reason"] for e in json.loads(events)["items"]}
    assert {"ShardRetried", "ShardFailed"} <= reasons, reasons
    out = parts(scores / "run2")
    ids = out["id"].to_numpy()
    assert len(np.unique(ids)) == len(ids)  # the retried shard wrote its part once
    corrupt = set(range(starts[2], starts[2] + sizes[2]))
    expected = set(range(sum(sizes))) - corrupt - set(BAD)
    assert set(ids.tolist()) == expected
    print(f"\nbatch: shard 0 retried after its pod {victim} was deleted, shard 2 failed on its corrupt file")


@pytest.mark.kwok
def test_a_hundred_shards_are_placed_on_the_simulated_nodes_each_tracked_by_index(
    cluster: Cluster, namespace: str, claims: tuple[Path, Path]
) -> None:
    data, _ = claims
    (data / "day3").mkdir()  # kwok completes its pods without running them: nothing is read
    job = batch_job("wide", "day3", "run3")
    job["spec"].update(
        shards=100,
        parallelism=25,
        nodeSelector={"rollwise.dev/node-kind": "simulated"},
        tolerations=[{"key": SIMULATED_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
    )
    applied = time.monotonic()
    apply(namespace, job)
    status = wait_phase(cluster, namespace, "wide", "Succeeded", 300)["status"]
    seconds = time.monotonic() - applied
    assert status["shardsTotal"] == 100 and status["shardsSucceeded"] == 100, status
    assert sorted(s["index"] for s in status["shards"]) == list(range(100))
    assert {s["phase"] for s in status["shards"]} == {"Succeeded"}
    jobs = client.BatchV1Api(cluster.api).list_namespaced_job(namespace).items
    (indexed,) = [j for j in jobs if (j.metadata.labels or {}).get("rollwise.dev/model-batch-job") == "wide"]
    assert indexed.spec.completion_mode == "Indexed" and indexed.spec.completions == 100
    assert indexed.spec.parallelism == 25 and indexed.status.completed_indexes == "0-99"
    pods = cluster.core.list_namespaced_pod(
        namespace, label_selector="rollwise.dev/model-batch-job=wide"
    ).items
    nodes = {p.spec.node_name for p in pods}
    assert nodes and all(n.startswith("kwok-node-") for n in nodes), nodes
    assert len(nodes) > 1, f"100 pods on one node of {nodes}: the scheduler did not spread them"
    plugin = paths.REPO / ".venv" / "bin" / "kubectl-rollwise"
    view = subprocess.run(
        [str(plugin), "-n", namespace, "batch", "wide"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "COLUMNS": "160"},
        check=False,
    )
    assert view.returncode == 0, view.stderr
    assert "Succeeded" in view.stdout and "100/100" in view.stdout, view.stdout
    print(
        f"\nbatch: 100 shards on {len(nodes)} kwok nodes, 25 at a time, Succeeded {seconds:.1f} s after apply"
    )
