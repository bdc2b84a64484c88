"""Model-server throughput and latency: Rollwise vs KServe vs MLServer, side by side in one run.

    .venv/bin/python bench/serving.py [--duration 5] [--concurrency 1,16,64] [--only NAME,...]

Serves the same Iris models (serving-image/make_example_models.py: a scikit-learn logistic
regression, and an ONNX MLP as float and as its INT8-quantized twin) with

- Rollwise (`rollwise-serve`, this repo's venv);
- KServe's model server (PyPI `kserve`): a `kserve.Model` subclass started by `ModelServer`, the
  way KServe documents custom Python predictors;
- MLServer (PyPI `mlserver`): `mlserver start` with `mlserver_sklearn.SKLearnModel` for the
  pickle and a small custom `MLModel` for ONNX (MLServer ships no ONNX runtime);
- a bare ASGI app on the same uvicorn that answers a constant: the ceiling.

Each peer lives in its own virtualenv under ~/.cache/rollwise/bench-venvs/ (created on first run,
reused after). Every server runs one worker process, listens on 127.0.0.1 only, and gets the
same Open Inference Protocol v2 request from the same load generator (wrk, one thread, keep-
alive connections) at concurrency 1, 16 and 64, after a 1 s warm-up. Peers run twice: with their
defaults, and with logging turned down (Rollwise's default already logs no line per request).
Prints requests/s, p50, p99, errors, and the ratios the goals are stated in (bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "serving-image"))

import make_example_models  # noqa: E402 - serving-image is not a package

CACHE = Path(os.environ.get("ROLLWISE_CACHE", Path.home() / ".cache" / "rollwise"))
VENVS = CACHE / "bench-venvs"
WORK = CACHE / "bench-work"
WRK = "/usr/bin/wrk"
PY_SPY = str(REPO / ".venv" / "bin" / "py-spy")
# Each peer's virtualenv installs bench/peers/NAME.txt: every package pinned with its hashes
# (`make lock` makes it from NAME.in, where the peers' own pins are explained).
PEER_LOCKS = REPO / "bench" / "peers"
# llama-server.txt is the proxy tests' llama.cpp server (scripts/llama_server_venv.py), not a peer.
PEERS = sorted(p.stem for p in PEER_LOCKS.glob("*.txt") if p.stem != "llama-server")
ROW = [5.1, 3.5, 1.4, 0.2]
BODY = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [ROW]}]}
GRPC_REQUEST = {
    "model_name": "iris",
    "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 4], "contents": {"fp32_contents": ROW}}],
}
"""The same request as ``BODY``, for ModelInfer (ghz sends it as protobuf)."""
GHZ_VERSION = "v0.93.0"
GHZ = CACHE / f"ghz-{GHZ_VERSION}" / "ghz"
PROTO = REPO / "serving-image" / "rollwise_serving" / "oip" / "grpc_predict_v2.proto"
MLSERVER_BATCHING = {"max_batch_size": 64, "max_batch_time": 0.002}
"""MLServer's adaptive batching for its `-batching` rows: up to 64 requests (the highest
concurrency) or 2 ms, whichever comes first. Rollwise's micro-batching waits for nothing (it
coalesces what one event-loop turn has), so a longer window would only add latency to MLServer."""

KSERVE_MODEL = (REPO / "e2e" / "testimages" / "kserve" / "model.py").read_text()
"""Iris behind KServe's ModelServer: the one script the bench, the proxy tests and the user image run."""

MLSERVER_ONNX = '''
"""A minimal ONNX runtime for MLServer (it ships none): load a session, run it, encode numpy."""
import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxModel(MLModel):
    async def load(self) -> bool:
        uri = await get_model_uri(self._settings)
        self.session = ort.InferenceSession(uri, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        label = self.session.run(None, {self.input_name: x})[0]
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output(name="label", payload=label.astype(object))],
        )
'''

BARE_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b'{"outputs":[]}'})
"""

BARE_GRPC = """
import asyncio, sys
import uvloop
from rollwise_serving.oip import grpc_predict_v2_pb2 as pb, grpc_predict_v2_pb2_grpc as pb_grpc
import grpc


class Empty(pb_grpc.GRPCInferenceServiceServicer):
    async def ModelInfer(self, request, context):
        return pb.ModelInferResponse(model_name=request.model_name)


async def main():
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Empty(), server)
    server.add_insecure_port(sys.argv[1])
    await server.start()
    await server.wait_for_termination()


uvloop.run(main())
"""
"""grpcio's own ceiling, as bare-asgi is REST's: ModelInfer answered with an empty response by
``grpc.aio`` on uvloop (the stack Rollwise's gRPC service runs on), no decoding, no model."""

QUIET_LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "WARNING"},
    "loggers": {
        name: {"level": "WARNING"}
        for name in ("kserve", "kserve.trace", "mlserver", "uvicorn", "uvicorn.error", "uvicorn.access")
    },
}


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- set-up (idempotent) ---------------------------------------------------------------------------


def ensure_venv(name: str) -> Path:
    """A virtualenv per peer, reused while its pinned requirements are unchanged."""
    venv = VENVS / name
    stamp = venv / ".rollwise-bench-stamp"
    locked = PEER_LOCKS / f"{name}.txt"
    wanted = locked.read_text()
    if stamp.exists() and stamp.read_text() == wanted:
        return venv
    log(f"creating {venv} from {locked.relative_to(REPO)}; this takes a few minutes once")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--require-hashes", "--no-deps", "-r", str(locked)],
        check=True,
    )
    stamp.write_text(wanted)
    return venv


def ensure_models() -> dict[str, Any]:
    out = WORK / "models"
    manifest = make_example_models.committed_manifest()
    shutil.copytree(make_example_models.COMMITTED, out, dirs_exist_ok=True)
    manifest["dir"] = out
    manifest["trees"] = tree_models(out)
    return manifest


TREE_ROUNDS = 20
"""Boosting rounds of the bench's XGBoost and LightGBM Iris models (depth 3: a small production
model's shape), 3 classes, softmax probabilities."""


def tree_models(out: Path) -> dict[str, Path]:
    """The Iris classifier as an XGBoost booster (JSON) and a LightGBM one (text), trained here
    with the versions Rollwise's extras lock, the same files for every server."""
    import lightgbm as lgb  # noqa: PLC0415 - only the tree rows need them
    import xgboost as xgb  # noqa: PLC0415
    from sklearn.datasets import load_iris  # noqa: PLC0415

    x, y = load_iris(return_X_y=True)
    files = {"xgboost": out / "iris-xgb.json", "lightgbm": out / "iris-lgb.txt"}
    if not files["xgboost"].exists():
        params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "nthread": 1, "seed": 0}
        xgb.train(params, xgb.DMatrix(x, y), TREE_ROUNDS).save_model(files["xgboost"])
    if not files["lightgbm"].exists():
        params = {"objective": "multiclass", "num_class": 3, "max_depth": 3, "num_threads": 1, "verbose": -1}
        lgb.train({**params, "min_data_in_leaf": 5, "seed": 0}, lgb.Dataset(x, y), TREE_ROUNDS).save_model(
            files["lightgbm"]
        )
    return files


# ---- servers ---------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    group: str
    """Rows of the table are grouped: sklearn, onnx, ceiling."""
    argv: Callable[[int], list[str]]
    path: str
    ready_path: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    venv: str | None = None
    """The peer's virtualenv (`ensure_venv`), if it is not Rollwise's."""
    load: str = "json"
    """How wrk or ghz sends ``BODY``: ``json``, ``binary`` (the binary tensor extension, both ways)
    or ``grpc`` (ModelInfer, to ``grpc_port``)."""
    grpc_port: int | None = None


def start(target: Target) -> tuple[int, subprocess.Popen[bytes], Path]:
    """Start a server and wait until it is ready: (port, process, log file)."""
    port = free_port()
    logfile = WORK / f"{target.name}.log"
    env = {**os.environ, **target.env}
    with logfile.open("wb") as out:
        proc = subprocess.Popen(
            target.argv(port),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=target.cwd,
            start_new_session=True,
        )
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{target.name} exited {proc.returncode}; see {logfile}")
        if _ready(target, port):
            return port, proc, logfile
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise RuntimeError(f"{target.name} not ready in 120 s; see {logfile}")
        time.sleep(0.2)


def _ready(target: Target, port: int) -> bool:
    """Its HTTP readiness path answers 200; a server with none (``ready_path`` empty) listens on
    its gRPC port."""
    try:
        if not target.ready_path:
            assert target.grpc_port is not None
            with socket.create_connection(("127.0.0.1", target.grpc_port), timeout=1):
                return True
        return httpx.get(f"http://127.0.0.1:{port}{target.ready_path}", timeout=1).status_code == 200
    except (httpx.HTTPError, OSError):
        return False


def terminate(proc: subprocess.Popen[bytes], grace: float = 15) -> None:
    """SIGTERM its process group, SIGKILL after `grace` seconds."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def running(target: Target) -> Iterator[int]:
    port, proc, _ = start(target)
    try:
        yield port
    finally:
        terminate(proc)


def targets(models: dict[str, Any], only: set[str] | None) -> list[Target]:  # noqa: C901 - a closure per server kind
    d: Path = models["dir"]
    m = models["models"]
    serve = str(REPO / ".venv" / "bin" / "rollwise-serve")
    (WORK / "kserve_model.py").write_text(KSERVE_MODEL)
    (WORK / "mlserver_onnx.py").write_text(MLSERVER_ONNX)
    (WORK / "bare_app.py").write_text(BARE_APP)
    (WORK / "bare_grpc.py").write_text(BARE_GRPC)
    quiet = WORK / "quiet-logging.json"
    quiet.write_text(json.dumps(QUIET_LOGGING))

    def rollwise(key: str, *extra: str) -> Callable[[int], list[str]]:
        e = m[key]
        return lambda port: [
            serve,
            "--model-uri",
            str(d / e["file"]),
            "--sha256",
            e["sha256"],
            "--format",
            e["format"],
            "--name",
            "iris",
            "--version",
            "v1",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--cache-dir",
            str(WORK / "rollwise-cache"),
            *extra,
        ]

    def rollwise_tree(fmt: str) -> Callable[[int], list[str]]:
        path = models["trees"][fmt]
        cache = str(WORK / "rollwise-cache")
        return lambda port: [
            serve,
            *("--model-uri", str(path), "--format", fmt, "--name", "iris", "--version", "v1"),
            *("--host", "127.0.0.1", "--port", str(port), "--cache-dir", cache),
        ]

    def model_file(key: str) -> Path:
        """A committed example model by manifest key, or one of the bench's tree models by format."""
        return models["trees"][key] if key in models["trees"] else d / m[key]["file"]

    def tree_rows(fmt: str, mlserver_runtime: str) -> list[Target]:
        """Ours, KServe's custom predictor and MLServer's own runtime (batching on) for one format."""
        peer = mlserver(
            fmt,
            mlserver_runtime,
            True,
            f"mlserver-{fmt}-batching-quiet",
            batching=True,
            venv="mlserver-trees",
        )
        return [
            Target(f"rollwise-{fmt}", fmt, rollwise_tree(fmt), *_ROLLWISE_PATHS),
            Target(
                f"kserve-{fmt}-quiet",
                fmt,
                kserve(fmt, fmt, True, venv="kserve-trees"),
                *_KSERVE_PATHS,
                venv="kserve-trees",
            ),
            _grouped(peer, fmt),
        ]

    def kserve(
        key: str, fmt: str, quiet_logs: bool, grpc: int | None = None, venv: str = "kserve"
    ) -> Callable[[int], list[str]]:
        extra = ["--enable_latency_logging", "false", "--log_config_file", str(quiet)] if quiet_logs else []
        return lambda port: [
            str(VENVS / venv / "bin" / "python"),
            str(WORK / "kserve_model.py"),
            "--model_name",
            "iris",
            "--model_path",
            str(model_file(key)),
            "--model_format",
            fmt,
            "--http_port",
            str(port),
            "--grpc_port",
            str(grpc or free_port()),
            "--workers",
            "1",
            *extra,
        ]

    def mlserver(
        key: str,
        implementation: str,
        quiet_logs: bool,
        name: str,
        *,
        batching: bool = False,
        grpc: int | None = None,
        venv: str = "mlserver",
    ) -> Target:
        repo = WORK / f"mlserver-{name}"
        shutil.rmtree(repo, ignore_errors=True)
        (repo / "iris").mkdir(parents=True)
        source = model_file(key)
        shutil.copy(source, repo / "iris" / source.name)
        model_settings = {
            "name": "iris",
            "implementation": implementation,
            "parameters": {"uri": f"./{source.name}"},
            **(MLSERVER_BATCHING if batching else {}),
        }
        (repo / "iris" / "model-settings.json").write_text(json.dumps(model_settings))
        settings: dict[str, Any] = {"host": "127.0.0.1", "grpc_port": 0, "metrics_port": 0}
        if quiet_logs:
            settings["logging_settings"] = str(quiet)

        def argv(port: int) -> list[str]:
            s = {**settings, "http_port": port, "grpc_port": grpc or free_port(), "metrics_port": free_port()}
            (repo / "settings.json").write_text(json.dumps(s))
            return [str(VENVS / venv / "bin" / "mlserver"), "start", str(repo)]

        env = {"PYTHONPATH": str(WORK)}
        return Target(
            name,
            "",
            argv,
            "/v2/models/iris/infer",
            "/v2/models/iris/ready",
            env=env,
            cwd=repo,
            load="grpc" if grpc else "json",
            grpc_port=grpc,
            venv=venv,
        )

    def bare(name: str) -> Target:
        def argv(port: int) -> list[str]:
            uvicorn = str(REPO / ".venv" / "bin" / "uvicorn")
            flags = ["--no-access-log", "--log-level", "warning", "--host", "127.0.0.1", "--port", str(port)]
            return [uvicorn, "bare_app:app", "--app-dir", str(WORK), *flags]

        return Target(name, "ceiling", argv, "/", "/")

    # The same server with the Iris schema, and with two segments declared on it: what per-segment
    # signals cost (#15), compared with --segment-cost.
    schema = json.loads((d / models["feature_schema"]).read_text())
    segmented = WORK / "iris-schema-segmented.json"
    segments = [
        {"feature": "sepal_length", "bins": [5, 6, 7]},
        {"feature": "petal_width", "bins": [0.5, 1.5]},
    ]
    segmented.write_text(json.dumps({**schema, "segments": segments}))
    with_schema = ("--feature-schema", str(d / models["feature_schema"]))

    grpc_ports = {
        name: free_port() for name in ("rollwise", "kserve", "mlserver", "mlserver-batching", "bare")
    }
    mlserver_sklearn = "mlserver_sklearn.SKLearnModel"
    # The ceiling runs first and last: on a shared machine the load drifts during a run, and the
    # shares below use the mean of both.
    all_targets = [
        bare("bare-asgi-before"),
        Target("rollwise", "sklearn", rollwise("iris-v1"), "/v2/models/iris/infer", "/v2/health/ready"),
        # the same server keeping no predictions for labels: what id tracking costs (#15)
        Target(
            "rollwise-untracked",
            "sklearn",
            rollwise("iris-v1", "--feedback-max-predictions", "0"),
            "/v2/models/iris/infer",
            "/v2/health/ready",
        ),
        Target("rollwise-schema", "sklearn", rollwise("iris-v1", *with_schema), *_ROLLWISE_PATHS),
        Target(
            "rollwise-segmented",
            "sklearn",
            rollwise("iris-v1", "--feature-schema", str(segmented)),
            *_ROLLWISE_PATHS,
        ),
        Target(
            "kserve",
            "sklearn",
            kserve("iris-v1", "sklearn", False),
            "/v2/models/iris/infer",
            "/v2/models/iris/ready",
        ),
        Target(
            "kserve-quiet",
            "sklearn",
            kserve("iris-v1", "sklearn", True),
            "/v2/models/iris/infer",
            "/v2/models/iris/ready",
        ),
        _grouped(mlserver("iris-v1", "mlserver_sklearn.SKLearnModel", False, "mlserver"), "sklearn"),
        _grouped(mlserver("iris-v1", "mlserver_sklearn.SKLearnModel", True, "mlserver-quiet"), "sklearn"),
        # MLServer with its own batching on (Rollwise's micro-batching is always on)
        _grouped(
            mlserver("iris-v1", mlserver_sklearn, True, "mlserver-batching-quiet", batching=True), "sklearn"
        ),
        # the binary tensor extension, both ways (KServe reads and writes it too; MLServer does not)
        Target("rollwise-binary", "sklearn", rollwise("iris-v1"), *_ROLLWISE_PATHS, load="binary"),
        Target(
            "kserve-binary-quiet",
            "sklearn",
            kserve("iris-v1", "sklearn", True),
            "/v2/models/iris/infer",
            "/v2/models/iris/ready",
            load="binary",
        ),
        # OIP gRPC, ModelInfer from ghz
        Target(
            "rollwise-grpc",
            "sklearn",
            rollwise("iris-v1", "--grpc-port", str(grpc_ports["rollwise"])),
            *_ROLLWISE_PATHS,
            load="grpc",
            grpc_port=grpc_ports["rollwise"],
        ),
        Target(
            "kserve-grpc-quiet",
            "sklearn",
            kserve("iris-v1", "sklearn", True, grpc_ports["kserve"]),
            "/v2/models/iris/infer",
            "/v2/models/iris/ready",
            load="grpc",
            grpc_port=grpc_ports["kserve"],
        ),
        _grouped(
            mlserver("iris-v1", mlserver_sklearn, True, "mlserver-grpc-quiet", grpc=grpc_ports["mlserver"]),
            "sklearn",
        ),
        _grouped(
            mlserver(
                "iris-v1",
                mlserver_sklearn,
                True,
                "mlserver-batching-grpc-quiet",
                batching=True,
                grpc=grpc_ports["mlserver-batching"],
            ),
            "sklearn",
        ),
        Target(
            "rollwise-onnx", "onnx", rollwise("iris-mlp-onnx"), "/v2/models/iris/infer", "/v2/health/ready"
        ),
        Target(
            "rollwise-onnx-int8",
            "onnx",
            rollwise("iris-mlp-int8"),
            "/v2/models/iris/infer",
            "/v2/health/ready",
        ),
        Target(
            "kserve-onnx-quiet",
            "onnx",
            kserve("iris-mlp-onnx", "onnx", True),
            "/v2/models/iris/infer",
            "/v2/models/iris/ready",
        ),
        _grouped(mlserver("iris-mlp-onnx", "mlserver_onnx.OnnxModel", True, "mlserver-onnx-quiet"), "onnx"),
        # the tree formats, against MLServer's own runtimes for them (batching on, as ours is) and
        # KServe's custom predictor (its XGBoost and LightGBM servers are not on PyPI)
        *tree_rows("xgboost", "mlserver_xgboost.XGBoostModel"),
        *tree_rows("lightgbm", "mlserver_lightgbm.LightGBMModel"),
        bare("bare-asgi-after"),
        Target(
            "bare-grpc",
            "ceiling",
            lambda port: [
                str(REPO / ".venv" / "bin" / "python"),
                str(WORK / "bare_grpc.py"),
                f"127.0.0.1:{grpc_ports['bare']}",
            ],
            "",
            "",
            env={"PYTHONPATH": str(REPO / "serving-image")},
            load="grpc",
            grpc_port=grpc_ports["bare"],
        ),
    ]
    return [_with_venv(t) for t in all_targets if only is None or t.name in only]


_ROLLWISE_PATHS = ("/v2/models/iris/infer", "/v2/health/ready")
_KSERVE_PATHS = ("/v2/models/iris/infer", "/v2/models/iris/ready")


def _with_venv(target: Target) -> Target:
    """A peer's target runs from the venv its name starts with, unless it names another."""
    peer = target.name.split("-")[0]
    target.venv = target.venv or (peer if peer in PEERS else None)
    return target


def _grouped(target: Target, group: str) -> Target:
    target.group = group
    return target


# ---- load ------------------------------------------------------------------------------------------


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, concurrency: int, duration: int, script: Path) -> Result:
    proc = subprocess.run(
        [WRK, "-t1", f"-c{concurrency}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )
    out = proc.stdout

    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            raise RuntimeError(f"no {pct}% latency in wrk output:\n{out}")
        return float(m[1]) * _UNITS[m[2]]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx[1]) if non2xx else 0
    if sock:
        errors += sum(int(g) for g in sock.groups())
    if not rps:
        raise RuntimeError(f"no Requests/sec in wrk output:\n{out}")
    return Result(float(rps[1]), latency("50"), latency("99"), errors)


def ghz(port: int, concurrency: int, duration: int) -> Result:
    """ModelInfer at `concurrency` for `duration` s over one HTTP/2 connection, ghz on one core
    (as wrk runs one thread)."""
    argv = [
        str(GHZ),
        "--insecure",
        "--proto",
        str(PROTO),
        "--call",
        "inference.GRPCInferenceService/ModelInfer",
        "-d",
        json.dumps(GRPC_REQUEST),
        "-c",
        str(concurrency),
        "-z",
        f"{duration}s",
        # calls in flight at the end finish (and count) rather than fail as "transport is closing"
        "--duration-stop",
        "wait",
        "--connections",
        "1",
        "--cpus",
        "1",
        "-O",
        "json",
        f"127.0.0.1:{port}",
    ]
    out = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    latency = {int(d["percentage"]): d["latency"] / 1e6 for d in out.get("latencyDistribution") or []}
    codes = out.get("statusCodeDistribution") or {}
    errors = sum(n for code, n in codes.items() if code != "OK")
    return Result(float(out["rps"]), latency.get(50, float("nan")), latency.get(99, float("nan")), errors)


def binary_script() -> Path:
    """wrk sending ``BODY`` in the binary tensor extension: the JSON header, then the row's 16
    bytes of FP32, asking for binary outputs (as Triton's client does by default)."""
    import numpy as np  # noqa: PLC0415 - only this mode builds raw tensors

    blob = np.asarray([ROW], dtype="<f4").tobytes()
    head = {
        "inputs": [
            {
                "name": "input-0",
                "shape": [1, 4],
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(blob)},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    header = json.dumps(head, separators=(",", ":")).encode()
    body = "".join(f"\\{b:03d}" for b in header + blob)
    path = WORK / "post-binary.lua"
    path.write_text(
        textwrap.dedent(
            f"""\
            wrk.method = "POST"
            wrk.headers["Content-Type"] = "application/octet-stream"
            wrk.headers["Inference-Header-Content-Length"] = "{len(header)}"
            wrk.body = "{body}"
            """
        )
    )
    return path


def lua_script() -> Path:
    path = WORK / "post.lua"
    body = json.dumps(BODY).replace("\\", "\\\\").replace("'", "\\'")
    path.write_text(
        textwrap.dedent(
            f"""\
            wrk.method = "POST"
            wrk.headers["Content-Type"] = "application/json"
            wrk.body = '{body}'
            """
        )
    )
    return path


def check_answer(port: int, path: str) -> None:
    """A real prediction, not an error page, before measuring."""
    r = httpx.post(f"http://127.0.0.1:{port}{path}", json=BODY, timeout=10)
    if r.status_code != 200:
        raise RuntimeError(f"{path} answered {r.status_code}: {r.text[:300]}")


# ---- report ----------------------------------------------------------------------------------------


def main() -> int:  # noqa: C901 - one branch per mode flag, each a line
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement (default 5)")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--only", help="comma-separated target names (default: all)")
    parser.add_argument(
        "--tracking-cost",
        type=int,
        metavar="ROUNDS",
        help="only compare rollwise and rollwise-untracked, both running, wrk alternating between "
        "them ROUNDS times per concurrency (steadier than one cell each on a busy machine)",
    )
    parser.add_argument(
        "--segment-cost",
        type=int,
        metavar="ROUNDS",
        help="the same interleaving for rollwise-segmented (two segments declared) against "
        "rollwise-schema (the same schema without segments)",
    )
    parser.add_argument(
        "--tracking-profile",
        type=int,
        metavar="SECONDS",
        help="only profile a tracked rollwise server under load for SECONDS and report the share of "
        "its CPU samples spent keeping answers for labels (py-spy)",
    )
    parser.add_argument(
        "--venv",
        metavar="PEER",
        help="only make (or reuse) the peer's virtualenv and print its path (the proxy's tests use it)",
    )
    parser.add_argument(
        "--proxy-cost",
        type=int,
        metavar="ROUNDS",
        help="only measure rollwise-proxy's cost: the bundled server and MLServer direct and through the "
        "proxy, wrk alternating between them ROUNDS times per concurrency",
    )
    args = parser.parse_args()
    if args.venv:
        print(ensure_venv(args.venv))
        return 0
    if not Path(WRK).exists():
        sys.exit("wrk is not installed: apt-get install wrk (scripts/bootstrap.sh does)")
    WORK.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    models = ensure_models()
    if args.tracking_profile:
        print(tracking_profile(models, args.tracking_profile))
        return 0
    if args.tracking_cost:
        print(interleaved_tracking_cost(models, concurrencies, args.duration, args.tracking_cost))
        return 0
    if args.proxy_cost:
        ensure_venv("mlserver")
        ensure_venv("kserve")
        print(proxy_cost(models, concurrencies, args.duration, args.proxy_cost))
        return 0
    if args.segment_cost:
        pair = ("rollwise-segmented", "rollwise-schema")
        print(interleaved_tracking_cost(models, concurrencies, args.duration, args.segment_cost, pair))
        return 0
    chosen = targets(models, only)
    for venv in sorted({t.venv for t in chosen if t.venv}):
        ensure_venv(venv)
    if any(t.load == "grpc" for t in chosen) and not GHZ.exists():
        log(f"building ghz {GHZ_VERSION} from the Go module proxy (once)")
        subprocess.run(["bash", str(REPO / "e2e" / "build-binaries.sh"), "ghz"], check=True)
    scripts = {"json": lua_script(), "binary": binary_script()}
    results: dict[str, dict[int, Result]] = {}
    groups: dict[str, str] = {}
    for target in chosen:
        log(f"{target.name}: starting")
        with running(target) as port:
            url = f"http://127.0.0.1:{port}{target.path}"
            if target.group != "ceiling":
                check_answer(port, target.path)

            def measure(c: int, seconds: int, target: Target = target, url: str = url) -> Result:
                if target.load == "grpc":
                    assert target.grpc_port is not None
                    return ghz(target.grpc_port, c, seconds)
                return wrk(url, c, seconds, scripts[target.load])

            warm = measure(16, 1)  # warm-up, and a check that this protocol answers
            if warm.errors:
                raise RuntimeError(f"{target.name}: {warm.errors} errors in the warm-up ({target.load})")
            results[target.name] = {}
            groups[target.name] = target.group
            for c in concurrencies:
                r = measure(c, args.duration)
                results[target.name][c] = r
                log(
                    f"{target.name} c={c}: {r.rps:,.0f} req/s p50 {r.p50_ms:.2f} ms "
                    f"p99 {r.p99_ms:.2f} ms errors {r.errors}"
                )
    print(report(results, groups, concurrencies, models, args.duration))
    return 0


def report(
    results: dict[str, dict[int, Result]],
    groups: dict[str, str],
    concurrencies: list[int],
    models: dict[str, Any],
    duration: int,
) -> str:
    lines = [
        f"wrk -t1, {duration} s per cell, one worker process per server, {os.cpu_count()} cores, "
        "OIP v2 JSON request with one Iris row",
        "",
        "| server | model | "
        + " | ".join(f"c={c} req/s | p50 ms | p99 ms" for c in concurrencies)
        + " | errors |",
        "| --- | --- | " + " | ".join("---: | ---: | ---:" for _ in concurrencies) + " | ---: |",
    ]
    for name, by_c in results.items():
        cells = " | ".join(
            f"{by_c[c].rps:,.0f} | {by_c[c].p50_ms:.2f} | {by_c[c].p99_ms:.2f}" for c in concurrencies
        )
        errors = sum(r.errors for r in by_c.values())
        lines.append(f"| {name} | {groups[name]} | {cells} | {errors} |")
    lines.append("")
    lines.append("Ratios (Rollwise / peer: throughput, and p99 — lower is better for p99):")
    for base, peers in (
        ("rollwise", ("kserve", "kserve-quiet", "mlserver", "mlserver-quiet", "mlserver-batching-quiet")),
        ("rollwise-binary", ("kserve-binary-quiet",)),
        ("rollwise-grpc", ("kserve-grpc-quiet", "mlserver-grpc-quiet", "mlserver-batching-grpc-quiet")),
        ("rollwise-onnx", ("kserve-onnx-quiet", "mlserver-onnx-quiet")),
        ("rollwise-xgboost", ("kserve-xgboost-quiet", "mlserver-xgboost-batching-quiet")),
        ("rollwise-lightgbm", ("kserve-lightgbm-quiet", "mlserver-lightgbm-batching-quiet")),
    ):
        if base not in results:
            continue
        for peer in peers:
            if peer not in results:
                continue
            parts = []
            for c in concurrencies:
                a, b = results[base][c], results[peer][c]
                parts.append(
                    f"c={c}: {a.rps / b.rps:.1f}x req/s, p99 {a.p99_ms / b.p99_ms:.2f}x, "
                    f"p50 {a.p50_ms / b.p50_ms:.2f}x"
                )
            lines.append(f"- {base} vs {peer}: " + "; ".join(parts))
    lines += protocol_ratios(results, concurrencies)
    lines += tracking_cost(results, concurrencies)
    ceilings = [results[n] for n in ("bare-asgi-before", "bare-asgi-after") if n in results]
    if ceilings:
        ceiling = {c: sum(r[c].rps for r in ceilings) / len(ceilings) for c in concurrencies}
        for name in ("rollwise", "rollwise-onnx", "rollwise-onnx-int8"):
            if name in results:
                shares = ", ".join(
                    f"c={c}: {100 * results[name][c].rps / ceiling[c]:.0f} %" for c in concurrencies
                )
                lines.append(f"- {name} as a share of the bare-ASGI ceiling (mean of before/after): {shares}")
    float_b, int8_b = models["models"]["iris-mlp-onnx"]["bytes"], models["models"]["iris-mlp-int8"]["bytes"]
    lines.append(f"- ONNX MLP size: float {float_b:,} B, INT8 {int8_b:,} B ({float_b / int8_b:.1f}x smaller)")
    return "\n".join(lines)


def protocol_ratios(results: dict[str, dict[int, Result]], concurrencies: list[int]) -> list[str]:
    """Our gRPC and binary REST against our REST JSON (goal: gRPC at least 1.5x at c=64)."""
    lines = []
    for variant in ("rollwise-grpc", "rollwise-binary"):
        if variant in results and "rollwise" in results:
            parts = [
                f"c={c}: {results[variant][c].rps / results['rollwise'][c].rps:.2f}x" for c in concurrencies
            ]
            lines.append(f"- {variant} vs rollwise (REST JSON) req/s: " + ", ".join(parts))
    if "rollwise-grpc" in results and "bare-grpc" in results:
        parts = [
            f"c={c}: {results['rollwise-grpc'][c].rps / results['bare-grpc'][c].rps:.0%}"
            for c in concurrencies
        ]
        lines.append(
            "- rollwise-grpc as a share of grpcio's empty-handler ceiling (bare-grpc): " + ", ".join(parts)
        )
    return lines


def tracking_cost(results: dict[str, dict[int, Result]], concurrencies: list[int]) -> list[str]:
    """What keeping every answer for its ground-truth label costs: the same server with
    `--feedback-max-predictions 0`, measured right after it (goal: at most 10 % of throughput)."""
    if "rollwise" not in results or "rollwise-untracked" not in results:
        return []
    tracked, untracked = results["rollwise"], results["rollwise-untracked"]
    parts = [
        f"c={c}: {100 * (1 - tracked[c].rps / untracked[c].rps):+.1f} % req/s, "
        f"p99 {tracked[c].p99_ms / untracked[c].p99_ms:.2f}x"
        for c in concurrencies
    ]
    return ["- cost of keeping answers for labels (rollwise vs rollwise-untracked): " + "; ".join(parts)]


def interleaved_tracking_cost(
    models: dict[str, Any],
    concurrencies: list[int],
    duration: int,
    rounds: int,
    names: tuple[str, str] = ("rollwise", "rollwise-untracked"),
) -> str:
    """The cost of keeping answers for labels, measured so that a busy machine's drift cancels:
    both servers run at once and wrk alternates between them (ABBA...), one cell at a time. Besides
    the median req/s it reports the server's own CPU time per request (utime + stime of its
    process over the cell / requests answered): on a shared machine throughput swings by ±30 %
    with the neighbours' load, CPU per request hardly, and one event loop's throughput at
    saturation is its inverse. ``names``: the server with the feature, then the one without."""
    script = lua_script()
    pair = targets(models, set(names))
    servers = {t.name: start(t) for t in pair}
    cells: dict[str, dict[int, list[tuple[Result, float]]]] = {
        n: {c: [] for c in concurrencies} for n in servers
    }
    try:
        for port, _, _ in servers.values():
            check_answer(port, pair[0].path)
            wrk(f"http://127.0.0.1:{port}{pair[0].path}", 16, 1, script)  # warm-up
        for c in concurrencies:
            for r in range(rounds):
                for name in list(servers) if r % 2 == 0 else list(reversed(servers)):
                    port, proc, _ = servers[name]
                    before = cpu_seconds(proc.pid)
                    result = wrk(f"http://127.0.0.1:{port}{pair[0].path}", c, duration, script)
                    used = cpu_seconds(proc.pid) - before
                    cells[name][c].append((result, 1e6 * used / max(result.rps * duration, 1)))
            log(f"c={c}: " + ", ".join(f"{n} {_median_rps(cells[n][c]):,.0f} req/s" for n in servers))
    finally:
        for _, proc, _ in servers.values():
            terminate(proc)
    a, b = names
    lines = [
        f"Cost of {a} over {b}, interleaved: {rounds} rounds of {duration} s per server and "
        "concurrency, medians",
        "",
        f"| concurrency | {a} req/s | {b} req/s | req/s cost | {a} CPU µs/req "
        f"| {b} CPU µs/req | CPU cost | {a} p99 ms | {b} p99 ms |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in concurrencies:
        t, u = cells[a][c], cells[b][c]
        t_cpu, u_cpu = statistics.median(x[1] for x in t), statistics.median(x[1] for x in u)
        t_p99, u_p99 = statistics.median(x[0].p99_ms for x in t), statistics.median(x[0].p99_ms for x in u)
        lines.append(
            f"| {c} | {_median_rps(t):,.0f} | {_median_rps(u):,.0f} | "
            f"{100 * (1 - _median_rps(t) / _median_rps(u)):+.1f} % | {t_cpu:.0f} | {u_cpu:.0f} | "
            f"{100 * (t_cpu / u_cpu - 1):+.1f} % | {t_p99:.2f} | {u_p99:.2f} |"
        )
    lines.append("")
    if names[0] == "rollwise":
        lines.append(
            f"In process, the store alone: {keep_microseconds():.1f} µs to keep a one-row Iris answer"
        )
    else:
        lines.append(f"In process, the coder alone: {segment_microseconds():.1f} µs for a one-row request")
    return "\n".join(lines)


def segment_microseconds(requests: int = 100_000) -> float:
    """What the segment codes and their counters cost a one-row request (two bin segments), timed
    in this process: the floor under the interleaved figures' noise."""
    import numpy as np  # noqa: PLC0415 - the bench's own imports stay light
    from rollwise_contract.metrics import Outcome  # noqa: PLC0415
    from rollwise_serving.features import SchemaChecker  # noqa: PLC0415
    from rollwise_serving.metrics import ServerMetrics  # noqa: PLC0415

    checker = SchemaChecker.load(str(WORK / "iris-schema-segmented.json"))
    assert checker.segments is not None
    metrics = ServerMetrics(model="iris", version="v1", track="stable", schema=checker)
    row, labels = np.array([[5.1, 3.5, 1.4, 0.2]]), np.array(["setosa"], dtype=object)
    start = time.perf_counter()
    for _ in range(requests):
        codes = checker.segments.codes(row)
        metrics.observe_segment_rows(codes, Outcome.SUCCESS)
        metrics.observe_segment_predictions(codes, labels)
    return 1e6 * (time.perf_counter() - start) / requests


def keep_microseconds(answers: int = 200_000) -> float:
    """What `PredictionStore.keep` costs an answer (id, class code, float32 probabilities, the
    store filling towards its default bound), timed in this process: the floor under the
    interleaved figures' noise."""
    import numpy as np  # noqa: PLC0415 - the bench's own imports stay light
    from rollwise_serving.feedback import PredictionStore, new_id  # noqa: PLC0415

    store = PredictionStore(max_rows=1_000_000, retention_seconds=3600, version="v1", track="stable")
    store.bind(["setosa", "versicolor", "virginica"], columns=True)
    labels, probabilities = np.array(["setosa"], dtype=object), np.array([[0.9, 0.07, 0.03]])
    ids = [new_id() for _ in range(answers)]
    start = time.perf_counter()
    for prediction_id in ids:
        store.keep(prediction_id, labels, None, probabilities)
    return 1e6 * (time.perf_counter() - start) / answers


def _median_rps(cells: list[tuple[Result, float]]) -> float:
    return statistics.median(r.rps for r, _ in cells)


KEEPING = ("Dataplane._keep", "Feedback.record")
"""Frames of keeping an answer for its label: a sample with one of them on its stack is that work."""


def tracking_profile(models: dict[str, Any], seconds: int) -> str:
    """The direct cost of keeping answers for labels, measured where the machine's load cannot
    move it: py-spy samples a tracked server saturated by wrk (c=64) and counts the share of its
    samples inside ``KEEPING``; with the server's CPU per request over the same window that is
    microseconds per answer. What this misses is indirect cost (caches, allocator), which only the
    interleaved A/B (``--tracking-cost``) can show."""
    [target] = targets(models, {"rollwise"})
    script = lua_script()
    raw = WORK / "tracking-profile.txt"
    port, proc, _ = start(target)
    try:
        url = f"http://127.0.0.1:{port}{target.path}"
        check_answer(port, target.path)
        wrk(url, 16, 1, script)  # warm-up
        load = subprocess.Popen(
            [WRK, "-t1", "-c64", f"-d{seconds + 4}s", "-s", str(script), url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(2)
        served, cpu = _served(port), cpu_seconds(proc.pid)
        spy = [PY_SPY, "record", "-p", str(proc.pid), "-d", str(seconds), "-r", "250"]
        subprocess.run(
            [*spy, "-f", "raw", "-o", str(raw), "--nonblocking"],
            check=True,
            capture_output=True,
        )
        served, cpu = _served(port) - served, cpu_seconds(proc.pid) - cpu
        load.wait()
    finally:
        terminate(proc)
    total = keeping = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        total += int(count)
        if any(f.split(" (")[0] in KEEPING for f in frames):
            keeping += int(count)
    per_request = 1e6 * cpu / max(served, 1)
    share = keeping / max(total, 1)
    return (
        f"Tracked server at c=64 for {seconds} s: {served:,} requests, {per_request:.0f} µs CPU each; "
        f"{keeping:,} of {total:,} py-spy samples ({100 * share:.1f} %) inside keeping answers for "
        f"labels ({', '.join(KEEPING)}), i.e. about {share * per_request:.1f} µs an answer"
    )


def _served(port: int) -> int:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("rollwise_requests_total{")
        )
    )


PROXY_UPSTREAMS = ("rollwise", "mlserver-quiet", "kserve-quiet")
"""What --proxy-cost puts behind rollwise-proxy: the bundled server, MLServer and KServe (logs quiet)."""


def proxy_target(name: str, upstream_port: int, models: dict[str, Any]) -> Target:
    """rollwise-proxy (oip-rest) in front of a running upstream, with the Iris schema and
    reference: the signals a pod behind it exports, features and drift included."""
    d = models["dir"]
    proxy = str(REPO / ".venv" / "bin" / "rollwise-proxy")

    def argv(port: int) -> list[str]:
        return [
            *(proxy, "--upstream", f"http://127.0.0.1:{upstream_port}", "--protocol", "oip-rest"),
            *("--name", "iris", "--version", "v1", "--host", "127.0.0.1", "--port", str(port)),
            *(
                "--feature-schema",
                str(d / models["feature_schema"]),
                "--reference",
                str(d / models["reference"]),
            ),
            *("--log-level", "warning"),
        ]

    return Target(name, "proxy", argv, "/v2/models/iris/infer", "/rollwise/ready")


def proxy_cost(models: dict[str, Any], concurrencies: list[int], duration: int, rounds: int) -> str:
    """What the signals proxy (#18) costs: each upstream alone and through rollwise-proxy, both
    running, wrk alternating between the two URLs (ABBA...) so the machine's drift cancels;
    medians. The proxy and the upstream share the machine's cores, as a sidecar and its pod's
    server share a node's."""
    script = lua_script()
    rows = []
    for upstream in targets(models, set(PROXY_UPSTREAMS)):
        up_port, up_proc, _ = start(upstream)
        px_port, px_proc, _ = start(proxy_target(f"proxy-{upstream.name}", up_port, models))
        urls = {
            "direct": f"http://127.0.0.1:{up_port}{upstream.path}",
            "proxy": f"http://127.0.0.1:{px_port}{upstream.path}",
        }
        try:
            for url in urls.values():
                wrk(url, 16, 1, script)  # warm-up
            for c in concurrencies:
                cells: dict[str, list[Result]] = {k: [] for k in urls}
                cpu: list[float] = []
                for r in range(rounds):
                    for kind in list(urls) if r % 2 == 0 else list(reversed(urls)):
                        before = cpu_seconds(px_proc.pid)
                        result = wrk(urls[kind], c, duration, script)
                        cells[kind].append(result)
                        if kind == "proxy":
                            cpu.append(
                                1e6 * (cpu_seconds(px_proc.pid) - before) / max(result.rps * duration, 1)
                            )
                rows.append((upstream.name, c, cells, statistics.median(cpu)))
                log(
                    f"{upstream.name} c={c}: "
                    + ", ".join(
                        f"{k} {statistics.median(x.rps for x in v):,.0f} req/s" for k, v in cells.items()
                    )
                )
        finally:
            terminate(px_proc)
            terminate(up_proc)
    lines = [
        f"Cost of rollwise-proxy (oip-rest, Iris schema and reference), interleaved: {rounds} rounds of "
        f"{duration} s per URL and concurrency, medians, {os.cpu_count()} cores shared by wrk, the proxy "
        "and the upstream",
        "",
        "| upstream | concurrency | direct req/s | through proxy req/s | proxy / direct | direct p50 ms "
        "| proxy p50 ms | p50 added ms | proxy CPU µs/req | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, c, cells, cpu_us in rows:
        d_rps = statistics.median(x.rps for x in cells["direct"])
        p_rps = statistics.median(x.rps for x in cells["proxy"])
        d_p50 = statistics.median(x.p50_ms for x in cells["direct"])
        p_p50 = statistics.median(x.p50_ms for x in cells["proxy"])
        errors = sum(x.errors for v in cells.values() for x in v)
        lines.append(
            f"| {name} | {c} | {d_rps:,.0f} | {p_rps:,.0f} | {100 * p_rps / d_rps:.0f} % | {d_p50:.2f} "
            f"| {p_p50:.2f} | {p_p50 - d_p50:+.2f} | {cpu_us:.0f} | {errors} |"
        )
    return "\n".join(lines)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    sys.exit(main())
