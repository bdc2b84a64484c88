"""Shadow agreement (#15): the stable pod compares its answers with the shadow's, row by row.

Real processes on both sides: a stable `rollwise-serve` with `--mirror-url` pointing at a real
candidate server (or at a loopback peer that fails, stalls or answers junk). The candidates are
`python`-format models written here, which disagree with stable on rows chosen by their input
(column 1 is the row's number), so the expected counts are known exactly whatever the batching.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rollwise.cli.shadow import diff_view, read_diff

from tests.serving.conftest import (
    SETOSA,
    VERSICOLOR,
    VIRGINICA,
    Server,
    ServerFactory,
    infer_body,
    model_args,
    schema_args,
)
from tests.unit.cli_objects import render

CLASSIFIER = """
import numpy as np

CLASSES = ["setosa", "versicolor", "virginica"]
FLIP_EVERY = {flip_every}


class Model:
    classes = CLASSES

    def predict(self, inputs):
        x = np.asarray(next(iter(inputs.values())), dtype=np.float64)
        index = np.where(x[:, 0] < 2.5, 0, np.where(x[:, 0] < 4.9, 1, 2))
        if FLIP_EVERY:
            flipped = np.round(x[:, 1]).astype(int) % FLIP_EVERY == 0
            index = np.where(flipped, (index + 1) % 3, index)
        probabilities = np.full((len(x), 3), 0.1)
        probabilities[np.arange(len(x)), index] = 0.8
        return {{"label": np.asarray(CLASSES, dtype=object)[index], "probabilities": probabilities}}
"""
"""Column 0 picks the class; with FLIP_EVERY = k the candidate names the next class on rows whose
column 1 is a multiple of k, and puts its 0.8 there: those rows' largest probability difference
is 0.8 - 0.1 = 0.7."""

REGRESSOR = """
import numpy as np


class Model:
    def predict(self, inputs):
        x = np.asarray(next(iter(inputs.values())), dtype=np.float64)
        return {{"prediction": 2.0 * x[:, 0] + {shift} * x[:, 1]}}
"""
"""With shift 1 the candidate answers column 1 more than stable: the delta of a row is |x1|."""


def python_model(tmp: Path, file: str, source: str, *, version: str, name: str = "iris") -> list[str]:
    path = tmp / file
    path.write_text(source)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    common = ["--name", name, "--version", version]
    return ["--model-uri", str(path), "--sha256", digest, "--format", "python", *common]


def eventually(check: Any, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def pair(
    servers: ServerFactory, stable_args: list[str], candidate_args: list[str], *extra: str
) -> tuple[Server, Server]:
    candidate = servers.start(*candidate_args, "--track", "candidate")
    stable = servers.start(*stable_args, "--mirror-url", candidate.url, *extra)
    return stable, candidate


def compared(stable: Server, **labels: str) -> float:
    return stable.sample("rollwise_shadow_compared_total", **labels)


def diff(stable: Server) -> list[dict[str, Any]]:
    r = stable.get("/v2/models/iris/diff")
    assert r.status_code == 200, r.text
    entries: list[dict[str, Any]] = r.json()["entries"]
    return entries


# ---- agreement --------------------------------------------------------------------------------


def test_an_identical_candidate_agrees_on_every_row(
    fresh_servers: ServerFactory, models: dict[str, Any]
) -> None:
    """The same artifact under another version: every row agrees, every delta is 0, the diff
    ring stays empty, through /infer batches and /predict alike."""
    stable, _ = pair(
        fresh_servers,
        [*model_args(models, "iris-v1"), *schema_args(models)],
        [*model_args(models, "iris-v1", version="v1-copy"), *schema_args(models)],
    )
    rows = [SETOSA, VERSICOLOR, VIRGINICA]
    for _ in range(4):
        assert stable.post("/v2/models/iris/infer", content=infer_body(rows)).status_code == 200
    features = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    instances = [dict(zip(features, row, strict=True)) for row in rows]
    assert stable.post("/v2/models/iris/predict", json={"instances": instances}).status_code == 200

    eventually(lambda: compared(stable) == 15, "15 rows to be compared")
    assert compared(stable, peer_version="v1-copy") == 15
    assert stable.sample("rollwise_shadow_agreed_total", peer_version="v1-copy") == 15
    # scikit-learn answers probabilities: each row's largest difference is observed, and is 0.
    assert stable.sample("rollwise_shadow_delta_count", peer_version="v1-copy") == 15
    assert stable.sample("rollwise_shadow_delta_sum") == 0
    assert stable.sample("rollwise_shadow_delta_squared_total") == 0
    assert stable.sample("rollwise_shadow_uncomparable_total") == 0
    assert diff(stable) == []


def test_a_candidate_flipping_every_tenth_row_agrees_on_the_rest(
    fresh_servers: ServerFactory, tmp_path: Path
) -> None:
    stable, candidate = pair(
        fresh_servers,
        python_model(tmp_path, "stable.py", CLASSIFIER.format(flip_every=0), version="v1"),
        python_model(tmp_path, "candidate.py", CLASSIFIER.format(flip_every=10), version="v2"),
    )
    # 50 rows in 5 requests of 10, row number in column 1: rows 0, 10, 20, 30, 40 are flipped.
    answers = []
    for start in range(0, 50, 10):
        body = infer_body([[1.0 + (i % 3) * 2, float(i)] for i in range(start, start + 10)], "FP64")
        r = stable.post("/v2/models/iris/infer", content=body)
        assert r.status_code == 200 and r.json()["model_version"] == "v1"
        answers.append(r.json())

    eventually(lambda: compared(stable) == 50, "50 rows to be compared")
    assert stable.sample("rollwise_shadow_agreed_total", peer_version="v2") == 45
    assert stable.sample("rollwise_shadow_delta_count") == 50
    assert stable.sample("rollwise_shadow_delta_sum") == pytest.approx(5 * 0.7)
    assert stable.sample("rollwise_shadow_delta_squared_total") == pytest.approx(5 * 0.49)
    # The 45 agreeing rows have identical probabilities (delta 0, in the first bucket); the
    # flipped ones are over 0.5.
    assert stable.sample("rollwise_shadow_delta_bucket", le="0.001") == 45
    assert stable.sample("rollwise_shadow_delta_bucket", le="0.5") == 45
    assert stable.sample("rollwise_shadow_delta_bucket", le="1.0") == 50
    # The candidate answered the copies itself; stable's clients only ever saw stable's answers.
    assert candidate.sample("rollwise_requests_total", outcome="success") == 5

    entries = diff(stable)
    assert sorted(e["input"]["input-0"][1] for e in entries) == [0.0, 10.0, 20.0, 30.0, 40.0]
    classes = ["setosa", "versicolor", "virginica"]
    for e in entries:
        own = classes[int(e["input"]["input-0"][0] >= 2.5) + int(e["input"]["input-0"][0] >= 4.9)]
        assert e["stable"] == own
        assert e["shadow"] == classes[(classes.index(own) + 1) % 3]
        assert e["shadow_version"] == "v2"
        assert e["delta"] == pytest.approx(0.7)
        assert e["path"] == "/v2/models/iris/infer"
        assert e["time"].endswith("Z")
    # `kubectl rollwise diff` reads and renders this very answer.
    shown = render(
        diff_view("iris", read_diff(stable.get("/v2/models/iris/diff").content), datetime.now(UTC))
    )
    assert "5 rows where the candidate (v2) answered otherwise than stable v1" in shown
    assert (
        sum("[1.0, 0.0]" in line and "setosa" in line and "versicolor" in line for line in shown.splitlines())
        == 1
    )


def test_a_regressor_reports_the_sum_of_its_deltas(fresh_servers: ServerFactory, tmp_path: Path) -> None:
    stable, _ = pair(
        fresh_servers,
        python_model(tmp_path, "stable.py", REGRESSOR.format(shift=0.0), version="v1"),
        python_model(tmp_path, "candidate.py", REGRESSOR.format(shift=1.0), version="v2"),
    )
    shifts = [0.0, 0.5, -1.5, 0.0, 3.0, 0.25, -0.125, 40.0]
    body = infer_body([[float(i), s] for i, s in enumerate(shifts)], "FP64")
    assert stable.post("/v2/models/iris/infer", content=body).status_code == 200

    eventually(lambda: compared(stable) == len(shifts), "the rows to be compared")
    assert stable.sample("rollwise_shadow_delta_count", peer_version="v2") == len(shifts)
    assert stable.sample("rollwise_shadow_delta_sum") == pytest.approx(sum(abs(s) for s in shifts))
    assert stable.sample("rollwise_shadow_delta_squared_total") == pytest.approx(sum(s * s for s in shifts))
    # Regressors have no classes to agree on: their agreed counter stays 0.
    assert stable.sample("rollwise_shadow_agreed_total") == 0
    assert stable.sample("rollwise_shadow_delta_bucket", le="25.0") == len(shifts) - 1
    # Only the rows whose answers differ are in the ring, with both values.
    entries = diff(stable)
    assert sorted(e["delta"] for e in entries) == sorted(abs(s) for s in shifts if s)
    for e in entries:
        x0, x1 = e["input"]["input-0"]
        assert (e["stable"], e["shadow"]) == pytest.approx((2 * x0, 2 * x0 + x1))


def test_the_diff_ring_keeps_the_last_64_rows_and_cuts_long_inputs(
    fresh_servers: ServerFactory, tmp_path: Path
) -> None:
    """Every row differs (every row number is a multiple of 1); the ring keeps the newest 64,
    and a 600-column row is kept as its first 2 KiB of text, never the whole input."""
    stable, _ = pair(
        fresh_servers,
        python_model(tmp_path, "stable.py", CLASSIFIER.format(flip_every=0), version="v1"),
        python_model(tmp_path, "candidate.py", CLASSIFIER.format(flip_every=1), version="v2"),
    )
    for start in range(0, 100, 20):
        body = infer_body([[1.0, float(i)] for i in range(start, start + 20)], "FP64")
        assert stable.post("/v2/models/iris/infer", content=body).status_code == 200
        # one request at a time: four senders could otherwise compare them in another order
        eventually(lambda n=start + 20: compared(stable) == n, f"{start + 20} rows to be compared")
    entries = diff(stable)
    assert len(entries) == 64
    assert sorted(e["input"]["input-0"][1] for e in entries) == [float(i) for i in range(36, 100)]

    wide = [1.0, 100.0] + [1.2345678] * 598
    assert stable.post("/v2/models/iris/infer", content=infer_body([wide], "FP64")).status_code == 200
    eventually(lambda: compared(stable) == 101, "the wide row to be compared")
    entries = diff(stable)
    assert len(entries) == 64
    newest = entries[-1]["input"]
    assert isinstance(newest, str) and newest.startswith('{"input-0":[1.0,100.0,') and newest.endswith("...")
    assert len(newest) == 2048 + 3
    assert stable.sample("rollwise_shadow_agreed_total") == 0


def test_the_diff_route_exists_only_with_mirroring(
    fresh_servers: ServerFactory, models: dict[str, Any]
) -> None:
    alone = fresh_servers.start(*model_args(models, "iris-v1"))
    r = alone.get("/v2/models/iris/diff")
    assert r.status_code == 404 and "--mirror-url" in r.json()["error"]
    assert alone.post("/v2/models/iris/diff").status_code == 405


# ---- a shadow in trouble ----------------------------------------------------------------------


@dataclass
class Peer:
    """A loopback HTTP peer answering every POST with ``status`` and ``body``; while ``hold`` is
    clear it keeps each request waiting (longer than the mirror's 2 s timeout if never set)."""

    url: str = ""
    status: int = 200
    body: bytes = b"{}"
    hold: threading.Event = field(default_factory=threading.Event)
    received: list[int] = field(default_factory=list)


@pytest.fixture
def peer() -> Iterator[Peer]:
    state = Peer()
    state.hold.set()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            state.received.append(1)
            state.hold.wait(5)
            self.send_response(state.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    state.hold.set()
    server.shutdown()
    server.server_close()


def answer(server: Server, body: bytes) -> dict[str, Any]:
    """The answer without its prediction id (each answer gets its own)."""
    doc: dict[str, Any] = server.post("/v2/models/iris/infer", content=body).json()
    doc.pop("id", None)
    return doc


def test_a_stalled_or_failing_shadow_never_delays_or_changes_stable(
    fresh_servers: ServerFactory, models: dict[str, Any], peer: Peer
) -> None:
    """While the shadow holds every copy unanswered, stable's answers all come back, the same as
    a server without a mirror gives; the held copies then time out as `failed`, nothing is
    compared, and a shadow answering 500 is `failed` too."""
    plain = fresh_servers.start(*model_args(models, "iris-v1"))
    stable = fresh_servers.start(*model_args(models, "iris-v1"), "--mirror-url", peer.url)
    body = infer_body([SETOSA, VERSICOLOR, VIRGINICA])
    want = answer(plain, body)

    peer.hold.clear()
    # The shadow answers nothing until `hold` is set: every answer below came back without it.
    answers = [answer(stable, body) for _ in range(4)]
    assert answers == [want] * 4
    eventually(lambda: len(peer.received) == 4, "the shadow to receive the 4 copies")
    eventually(lambda: stable.sample("rollwise_mirror_total", result="failed") == 4, "the copies to time out")

    peer.hold.set()
    peer.status, peer.body = 500, b'{"error": "boom"}'
    assert [answer(stable, body) for _ in range(3)] == [want] * 3
    eventually(lambda: stable.sample("rollwise_mirror_total", result="failed") == 7, "the 500s")
    assert compared(stable) == 0
    assert stable.sample("rollwise_shadow_uncomparable_total") == 0


def test_refused_and_unreadable_shadow_answers_are_counted_uncomparable(
    fresh_servers: ServerFactory, models: dict[str, Any], peer: Peer
) -> None:
    """A shadow serving another model name refuses the copies (404): stable's rows are
    `refused`; a 200 that is not an inference answer is `unparseable`. Neither counts as
    compared, and both are counted per row of stable's answer."""
    other = fresh_servers.start(*model_args(models, "iris-v2", name="other", version="v2"))
    stable = fresh_servers.start(*model_args(models, "iris-v1"), "--mirror-url", other.url)
    assert stable.post("/v2/models/iris/infer", content=infer_body([SETOSA, VIRGINICA])).status_code == 200
    eventually(
        lambda: stable.sample("rollwise_shadow_uncomparable_total", reason="refused") == 2, "2 refused rows"
    )
    assert stable.sample("rollwise_mirror_total", result="sent") == 1

    peer.body = json.dumps({"model_version": "v9", "answer": 42}).encode()
    junk = fresh_servers.start(*model_args(models, "iris-v1"), "--mirror-url", peer.url)
    assert junk.post("/v2/models/iris/infer", content=infer_body([SETOSA] * 3)).status_code == 200
    eventually(
        lambda: junk.sample("rollwise_shadow_uncomparable_total", reason="unparseable") == 3,
        "3 unparseable rows",
    )
    for s in (stable, junk):
        assert compared(s) == 0
        assert diff(s) == []


def test_an_onnx_export_agrees_with_its_scikit_learn_original(
    fresh_servers: ServerFactory, models: dict[str, Any]
) -> None:
    """Another runtime, another arithmetic (onnxruntime's FP32 probabilities against
    scikit-learn's FP64): the classes agree and the deltas are rounding. (Outputs named otherwise,
    as ONNX converters often do, are found by datatype and shape: tests/unit/test_shadow_answers.py.)"""
    stable, _ = pair(
        fresh_servers,
        model_args(models, "iris-v1"),
        model_args(models, "iris-v1-onnx", version="v1-onnx"),
    )
    rows = [SETOSA, VERSICOLOR, VIRGINICA, [5.9, 3.0, 5.1, 1.8], [5.0, 3.4, 1.5, 0.2]]
    assert stable.post("/v2/models/iris/infer", content=infer_body(rows)).status_code == 200
    eventually(lambda: compared(stable, peer_version="v1-onnx") == len(rows), "the rows to be compared")
    assert stable.sample("rollwise_shadow_agreed_total") == len(rows)
    assert stable.sample("rollwise_shadow_delta_count") == len(rows)
    # float32 against float64 arithmetic: the probabilities differ by rounding only
    assert stable.sample("rollwise_shadow_delta_bucket", le="0.001") == len(rows)
    assert stable.sample("rollwise_shadow_uncomparable_total") == 0


FAILING = """
class Model:
    def predict(self, inputs):
        raise RuntimeError("the primary is broken")
"""


def test_answers_from_the_fallback_are_not_compared(
    fresh_servers: ServerFactory, models: dict[str, Any], tmp_path: Path
) -> None:
    """Agreement judges stable's model, not its fallback: a copy answered by the fallback is
    still mirrored, but not compared (here the shadow runs the fallback's own rule, so comparing
    would have counted agreement that says nothing about stable's model)."""
    rule = models["models"]["iris-rule"]
    fallback = ["--fallback-uri", str(models["dir"] / rule["file"]), "--fallback-format", "python"]
    stable, candidate = pair(
        fresh_servers,
        [
            *python_model(tmp_path, "broken.py", FAILING, version="v1"),
            *fallback,
            "--fallback-sha256",
            rule["sha256"],
        ],
        model_args(models, "iris-rule", version="v2"),
    )
    for _ in range(3):
        r = stable.post("/v2/models/iris/infer", content=infer_body([SETOSA, VIRGINICA], "FP64"))
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == ["setosa", "virginica"]
    assert stable.sample("rollwise_requests_total", outcome="fallback") == 3
    eventually(lambda: stable.sample("rollwise_mirror_total", result="sent") == 3, "3 copies to be sent")
    assert candidate.sample("rollwise_requests_total", outcome="success") == 3
    assert compared(stable) == 0
    assert stable.sample("rollwise_shadow_uncomparable_total") == 0
    assert diff(stable) == []
