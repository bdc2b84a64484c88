"""The Open Inference Protocol over gRPC (#17): unmodified Triton and KServe clients.

Real `rollwise-serve` processes with `--grpc-port`, driven by `tritonclient.grpc` as a user installs
it (its `InferInput.set_data_from_numpy` sends `raw_input_contents`) and by its generated stub for
requests with typed `contents`, which Triton's client never builds. Every datatype goes through an
echo model both ways; 1 000 Iris rows answer as they do over REST; errors come back with the code
and the message REST gives; calls are counted in the same metrics; the answer's id joins labels
posted to REST's feedback route. KServe's `InferenceGRPCClient` runs in a child process: its
generated module and Triton's declare the same protobuf names and refuse to load together.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from rollwise_serving.config import SettingsError, parse_settings
from rollwise_serving.grpc_service import encode_response
from rollwise_serving.protocol import InferOutput
from sklearn.datasets import load_iris
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.serving.conftest import (
    SETOSA,
    VERSICOLOR,
    VIRGINICA,
    Server,
    ServerFactory,
    free_port,
    infer_body,
    model_args,
    schema_args,
)
from tests.serving.test_binary import DATATYPES, ECHO, as_text, assert_round_trip, sample
from tests.serving.test_resilience import python_model as broken_model
from tests.serving.test_shadow_agreement import eventually, python_model

TYPED = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""The spec's datatype -> `InferTensorContents` field table, written out again here on purpose."""


def start(factory: ServerFactory, *args: str, **kw: Any) -> Server:
    return factory.start(*args, "--grpc-port", str(free_port()), **kw)


def address(server: Server) -> str:
    return f"127.0.0.1:{server.args[server.args.index('--grpc-port') + 1]}"


def client(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=address(server))


def call(
    server: Server, request: pb.ModelInferRequest, timeout: float = 30
) -> tuple[pb.ModelInferResponse, Any]:
    """A ModelInfer through Triton's generated stub: the answer and the call (its metadata)."""
    with grpc.insecure_channel(address(server)) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response, done = stub.ModelInfer.with_call(request, timeout=timeout)
        return response, done


def refused(server: Server, request: pb.ModelInferRequest, timeout: float = 30) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(server, request, timeout)
    return err.value


def typed(
    name: str, datatype: str, values: np.ndarray[Any, Any], model: str = "iris", field: str | None = None
) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name=name, datatype=datatype, shape=list(values.shape))
    flat = values.ravel().tolist()
    if datatype == "BYTES":
        flat = [v.encode() for v in flat]
    getattr(tensor.contents, field or TYPED[datatype]).extend(flat)
    return request


def raw(name: str, datatype: str, shape: list[int], blob: bytes, model: str = "iris") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, raw_input_contents=[blob])
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    return request


def requests(server: Server, outcome: str) -> float:
    return server.sample("rollwise_requests_total", outcome=outcome)


@pytest.fixture(scope="module")
def echo(servers: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> Server:
    tmp = tmp_path_factory.mktemp("echo")
    return start(servers, *python_model(tmp, "echo.py", ECHO, version="v1", name="echo"))


@pytest.fixture(scope="module")
def iris(servers: ServerFactory, models: dict[str, Any]) -> Server:
    return start(servers, *model_args(models, "iris-v1"), *schema_args(models))


# ---- the flag ---------------------------------------------------------------------------------------

FLAGS = ["--model-uri", "/m", "--name", "n", "--version", "1", "--sha256", "a" * 64]


def test_grpc_is_off_by_default_and_its_port_reaches_the_workers() -> None:
    assert parse_settings(FLAGS, {}).grpc_port is None
    on = parse_settings(FLAGS, {"ROLLWISE_GRPC_PORT": "9001"})
    assert on.grpc_port == 9001
    assert parse_settings([], on.to_environ()) == on  # --workers processes read it from the env


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (
            ["--grpc-port", "8080"],
            "--grpc-port 8080 is --port too; give gRPC a port of its own, e.g. 8081",
        ),
        (
            ["--grpc-port", "70000"],
            "--grpc-port (env ROLLWISE_GRPC_PORT): '70000' is not valid; use an integer from 1 to 65535",
        ),
    ],
)
def test_a_bad_grpc_port_is_refused_naming_the_fix(flags: list[str], problem: str) -> None:
    with pytest.raises(SettingsError) as err:
        parse_settings([*FLAGS, *flags], {})
    assert err.value.problems == [problem]


# ---- health and metadata -------------------------------------------------------------------------


def test_liveness_readiness_and_metadata_answer_as_rest_does(iris: Server) -> None:
    with client(iris) as c:
        assert c.is_server_live() and c.is_server_ready()
        assert c.is_model_ready("iris") and c.is_model_ready("iris", "v1")
        server = c.get_server_metadata(as_json=True)
        model = c.get_model_metadata("iris", as_json=True)
        with pytest.raises(InferenceServerException) as err:
            c.is_model_ready("nope")
        with pytest.raises(InferenceServerException) as unimplemented:
            c.get_model_config("iris")  # a Triton extension this server does not have
    assert "StatusCode.NOT_FOUND" in str(err.value.status())
    assert "no model 'nope'; this server serves 'iris'" in err.value.message()
    assert "StatusCode.UNIMPLEMENTED" in str(unimplemented.value.status())
    assert server == iris.get("/v2").json()
    rest = iris.get("/v2/models/iris").json()
    for tensor in (*rest["inputs"], *rest["outputs"]):
        tensor["shape"] = [str(d) for d in tensor["shape"]]  # protobuf's JSON writes int64 as strings
    assert model == rest


def test_a_model_that_is_not_loaded_is_not_ready_and_answers_unavailable(
    fresh_servers: ServerFactory, models: dict[str, Any]
) -> None:
    args = model_args(models, "iris-v1")
    args[args.index("--sha256") + 1] = "0" * 64  # the digest check refuses the artifact
    s = start(fresh_servers, *args, wait_ready=False)
    with client(s) as c:
        assert c.is_server_live()
        assert not c.is_server_ready() and not c.is_model_ready("iris")
        with pytest.raises(InferenceServerException) as metadata:
            c.get_model_metadata("iris")
    assert "StatusCode.UNAVAILABLE" in str(metadata.value.status())
    assert metadata.value.message() == s.get("/v2/models/iris").json()["error"]
    err = refused(s, typed("input-0", "FP32", np.array([SETOSA], dtype=np.float32)))
    assert err.code() is grpc.StatusCode.UNAVAILABLE
    assert err.details() == s.post("/v2/models/iris/infer", content=infer_body([SETOSA])).json()["error"]
    assert requests(s, "server_error") == 2  # one over gRPC, one over REST


# ---- tensors: raw and typed, every datatype ------------------------------------------------------


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_every_datatype_round_trips_raw_through_tritons_client(echo: Server, datatype: str) -> None:
    x = sample(datatype)
    tensor = triton.InferInput("x", list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    with client(echo) as c:
        result = c.infer("echo", [tensor])
    response = result.get_response()
    assert len(response.raw_output_contents) == 1 and not response.outputs[0].HasField("contents")
    assert_round_trip(result.as_numpy("echo_x"), x, datatype)


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d != "FP16"])
def test_every_datatype_round_trips_typed(echo: Server, datatype: str) -> None:
    """A request with typed `contents` is answered with typed `contents`, each in its field."""
    x = sample(datatype)
    response, _ = call(echo, typed("x", datatype, x, model="echo"))
    [out] = response.outputs
    assert not response.raw_output_contents
    assert (out.name, out.datatype, list(out.shape)) == ("echo_x", datatype, list(x.shape))
    values = list(getattr(out.contents, TYPED[datatype]))
    if datatype == "BYTES":
        assert [v.decode() for v in values] == x.ravel().tolist()
    else:
        np.testing.assert_array_equal(np.array(values, dtype=x.dtype).reshape(x.shape), x)


def test_fp16_has_no_typed_field_and_is_sent_raw(echo: Server) -> None:
    x = sample("FP16", rows=2)
    err = refused(echo, typed("x", "FP16", x, model="echo", field="fp32_contents"))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "inputs[0] ('x'): FP16 has no typed contents field; send it in raw_input_contents"


def test_an_fp16_output_makes_a_typed_answer_raw_as_a_whole() -> None:
    """FP16 has no typed field, and a client reads raw outputs by position: all go raw or none."""
    half, labels = np.array([[1.5, -2.0]], np.float16), np.array(["a", "b"], dtype=object)
    outputs = [InferOutput("scores", half), InferOutput("label", labels)]
    answer = pb.ModelInferResponse.FromString(
        encode_response("m", "v1", "id-1", outputs, raw=False).SerializeToString()
    )
    assert [(o.name, o.datatype, list(o.shape)) for o in answer.outputs] == [
        ("scores", "FP16", [1, 2]),
        ("label", "BYTES", [2]),
    ]
    assert not any(o.HasField("contents") for o in answer.outputs)
    assert answer.raw_output_contents == [half.astype("<f2").tobytes(), b"\x01\0\0\0a\x01\0\0\0b"]
    typed_only = encode_response("m", "v1", "id-2", outputs[1:], raw=False)
    assert (
        typed_only.outputs[0].contents.bytes_contents == [b"a", b"b"] and not typed_only.raw_output_contents
    )


def test_a_thousand_iris_rows_answer_as_they_do_over_rest(iris: Server) -> None:
    rows = np.concatenate([load_iris().data] * 7)[:1_000].astype(np.float32)
    tensor = triton.InferInput("input-0", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    before = requests(iris, "success")
    durations = iris.sample("rollwise_request_duration_seconds_count")
    with client(iris) as c:
        result = c.infer("iris", [tensor], request_id="batch-1")
    assert result.get_response().id == "batch-1"
    labels = as_text(result.as_numpy("label"))
    probabilities = result.as_numpy("probabilities")
    typed_answer, _ = call(iris, typed("input-0", "FP32", rows))
    rest = iris.post("/v2/models/iris/infer", content=infer_body(rows.tolist())).json()
    by_name = {o["name"]: o for o in rest["outputs"]}
    assert labels == by_name["label"]["data"]
    assert [v.decode() for v in typed_answer.outputs[0].contents.bytes_contents] == labels
    assert probabilities.shape == (1_000, 3)
    np.testing.assert_allclose(probabilities.ravel(), by_name["probabilities"]["data"], rtol=1e-6)
    assert requests(iris, "success") == before + 3
    assert iris.sample("rollwise_request_duration_seconds_count") == durations + 3


# ---- errors: REST's messages, gRPC's codes, counted ------------------------------------------------

ROW = np.array([SETOSA], dtype=np.float32)
IN = "inputs[0] ('input-0')"


def _two_raw() -> pb.ModelInferRequest:
    request = raw("input-0", "FP32", [1, 4], ROW.tobytes())
    request.raw_input_contents.append(ROW.tobytes())
    return request


def _both() -> pb.ModelInferRequest:
    request = raw("input-0", "FP32", [1, 4], ROW.tobytes())
    request.inputs[0].contents.fp32_contents.extend(SETOSA)
    return request


def _twice() -> pb.ModelInferRequest:
    request = typed("input-0", "FP32", ROW)
    request.inputs.append(request.inputs[0])
    return request


def _short() -> pb.ModelInferRequest:
    request = typed("input-0", "FP32", ROW)
    del request.inputs[0].contents.fp32_contents[3:]
    return request


def _asking(name: str, **parameters: int) -> pb.ModelInferRequest:
    request = typed("input-0", "FP32", ROW)
    out = request.outputs.add(name=name)
    for key, value in parameters.items():
        out.parameters[key].int64_param = value
    return request


BAD = [
    pytest.param(
        lambda: pb.ModelInferRequest(model_name="iris"), "inputs must be a non-empty list", id="no inputs"
    ),
    pytest.param(
        lambda: raw("input-0", "FP99", [1, 4], ROW.tobytes()),
        f"{IN}.datatype: 'FP99' is not valid; use one of BOOL, INT8",
        id="an unknown datatype",
    ),
    pytest.param(
        lambda: raw("input-0", "FP32", [-1, 4], ROW.tobytes()),
        f"{IN}.shape: [-1, 4] is not valid; use a list of 1 to 8 non-negative ints",
        id="a negative dimension",
    ),
    pytest.param(
        lambda: raw("input-0", "FP32", [1, 4], ROW.tobytes()[:12]),
        f"{IN}: shape [1, 4] of FP32 needs 16 bytes but raw_input_contents[0] has 12; make them match",
        id="raw bytes short of the shape",
    ),
    pytest.param(
        _two_raw,
        "raw_input_contents has 2 entries but the request has 1 inputs; send one entry per input",
        id="more raw entries than inputs",
    ),
    pytest.param(
        _both, f"{IN} has both contents and raw_input_contents; send one of them", id="contents and raw"
    ),
    pytest.param(
        _short,
        f"{IN}: shape [1, 4] needs 4 elements but contents.fp32_contents has 3; make data match the shape",
        id="typed values short of the shape",
    ),
    pytest.param(
        lambda: typed("input-0", "FP32", np.array([[1, 2, 3, 4]]), field="int64_contents"),
        f"{IN}.contents: FP32 data goes in fp32_contents, not int64_contents; send it there",
        id="typed values in another datatype's field",
    ),
    pytest.param(
        lambda: typed("input-0", "FP32", np.array([[np.nan, 1, 1, 1]])),
        f"{IN}.contents.fp32_contents holds a non-finite value (NaN or Infinity); send finite numbers",
        id="a NaN",
    ),
    pytest.param(
        lambda: typed("input-0", "INT8", np.array([[300, 1, 1, 1]])),
        f"{IN}.contents.int_contents holds a value out of the INT8 range",
        id="an INT8 out of range",
    ),
    pytest.param(
        lambda: raw("input-0", "BYTES", [1, 1], b"\x02\x00\x00\x00\xff\xfe"),
        f"{IN}: BYTES element 0 is not UTF-8 text",
        id="BYTES that are not text",
    ),
    pytest.param(_twice, "inputs names must be unique; got ['input-0', 'input-0']", id="one input twice"),
    pytest.param(
        lambda: raw("input-0", "FP32", [1, 3], ROW.tobytes()[:12]),
        "input 'input-0' has shape [1, 3]; the model expects ['N', 4]",
        id="a shape the model does not take",
    ),
    pytest.param(
        lambda: _asking("label", classification=2),
        "outputs[0] ('label').parameters.classification is not supported by this server",
        id="Triton's classification",
    ),
    pytest.param(lambda: _asking("nope"), "unknown output(s) ['nope']", id="an output the model has not"),
    pytest.param(
        lambda: typed("input-0", "FP32", np.array([[99.0, 3.5, 1.4, 0.2]], dtype=np.float32)),
        "1 invalid feature value(s): ",
        id="a row the feature schema refuses",
    ),
]


@pytest.mark.parametrize(("build", "says"), BAD)
def test_bad_requests_are_invalid_argument_naming_the_input_and_counted(
    iris: Server, build: Any, says: str
) -> None:
    before = requests(iris, "client_error")
    err = refused(iris, build())
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert says in err.details()
    assert requests(iris, "client_error") == before + 1


def test_another_model_or_version_is_not_found_and_not_counted(iris: Server) -> None:
    before = {o: requests(iris, o) for o in ("success", "client_error", "server_error")}
    other = refused(iris, typed("input-0", "FP32", ROW, model="nope"))
    request = typed("input-0", "FP32", ROW)
    request.model_version = "v9"
    version = refused(iris, request)
    assert other.code() is version.code() is grpc.StatusCode.NOT_FOUND
    assert other.details() == "no model 'nope'; this server serves 'iris'"
    assert version.details() == "model 'iris' has no version 'v9'; this server serves 'v1'"
    assert other.details() == iris.post("/v2/models/nope/infer", content=infer_body([SETOSA])).json()["error"]
    assert {o: requests(iris, o) for o in before} == before  # REST does not count these either


def test_a_message_over_max_body_bytes_is_refused_before_it_is_read(iris: Server) -> None:
    rows = np.tile(ROW, (70_000, 1))  # 1.1 MB of FP32, over the default 1 MiB
    err = refused(iris, raw("input-0", "FP32", list(rows.shape), rows.tobytes()))
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_failing_or_late_model_is_internal_or_deadline_exceeded(
    fresh_servers: ServerFactory, tmp_path: Path
) -> None:
    failing = start(fresh_servers, *broken_model(tmp_path, "fail"))
    err = refused(failing, typed("input-0", "FP64", np.array([SETOSA])))
    assert err.code() is grpc.StatusCode.INTERNAL
    assert "the model failed: RuntimeError: model is broken" in err.details()
    assert requests(failing, "server_error") == 1
    slow = start(fresh_servers, *broken_model(tmp_path, "slow"), "--deadline-ms", "50")
    err = refused(slow, typed("input-0", "FP64", np.array([SETOSA])))
    assert err.code() is grpc.StatusCode.DEADLINE_EXCEEDED and "deadline" in err.details()
    assert requests(slow, "server_error") == 1


def test_a_call_whose_own_deadline_passes_is_the_clients_and_its_latency_is_observed(
    fresh_servers: ServerFactory, tmp_path: Path
) -> None:
    slow = start(fresh_servers, *broken_model(tmp_path, "slow"))  # 0.5 s a call, no --deadline-ms
    err = refused(slow, typed("input-0", "FP64", np.array([SETOSA])), timeout=0.1)
    assert err.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    eventually(lambda: requests(slow, "client_error") == 1, "the cancelled call to be counted")
    assert requests(slow, "server_error") == requests(slow, "success") == 0
    assert slow.sample("rollwise_request_duration_seconds_count") == 1
    assert slow.sample("rollwise_inflight_requests") == 0


# ---- the prediction id and feedback --------------------------------------------------------------


def test_the_answers_id_comes_back_as_metadata_and_joins_labels_posted_to_rest(iris: Server) -> None:
    response, done = call(
        iris, typed("input-0", "FP32", np.array([SETOSA, VERSICOLOR, VIRGINICA], np.float32))
    )
    metadata = dict(done.initial_metadata())
    assert re.fullmatch(r"[0-9a-f]{16}", response.id)
    assert metadata["x-rollwise-prediction-id"] == response.id
    predicted = [v.decode() for v in response.outputs[0].contents.bytes_contents]
    assert predicted == ["setosa", "versicolor", "virginica"]
    before = iris.sample("rollwise_label_correct_total")
    truth = ["setosa", "virginica", "virginica"]
    labels = [{"id": response.id, "row": i, "label": t} for i, t in enumerate(truth)]
    r = iris.post("/v2/models/iris/feedback", content=json.dumps(labels).encode())
    assert r.status_code == 200, r.text
    assert r.json()["joined"] == 3
    assert iris.sample("rollwise_label_correct_total") == before + 2
    given = typed("input-0", "FP32", ROW)
    given.id = "order-9"
    response, done = call(iris, given)
    assert response.id == dict(done.initial_metadata())["x-rollwise-prediction-id"] == "order-9"
    given.id = "two words"  # any string is an OIP id; one that cannot be a header is echoed, not kept
    response, done = call(iris, given)
    assert response.id == "two words" and "x-rollwise-prediction-id" not in dict(done.initial_metadata())


# ---- workers ---------------------------------------------------------------------------------------


def test_every_worker_serves_grpc_on_the_one_port(
    fresh_servers: ServerFactory, models: dict[str, Any]
) -> None:
    s = start(fresh_servers, *model_args(models, "iris-v1"), "--workers", "2")
    for _ in range(20):  # a new connection each: the kernel spreads them over the workers
        with client(s) as c:
            tensor = triton.InferInput("input-0", [1, 4], "FP32")
            tensor.set_data_from_numpy(ROW)
            assert as_text(c.infer("iris", [tensor]).as_numpy("label")) == ["setosa"]
    pids = set(re.findall(r"Open Inference Protocol over gRPC on \S+ \(pid (\d+)\)", s.logs()))
    assert len(pids) == 2, s.logs()
    assert requests(s, "success") == 20  # counted by whichever worker answered, summed at scrape


# ---- KServe's client -------------------------------------------------------------------------------

KSERVE = """
import asyncio, json, sys
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest

async def main(url, rows):
    client = InferenceGRPCClient(url, timeout=30)
    out = {"live": await client.is_server_live(), "ready": await client.is_server_ready(),
           "model_ready": await client.is_model_ready("iris")}
    for kind, data in (("raw", np.asarray(rows, dtype=np.float32)), ("typed", sum(rows, []))):
        request = InferRequest("iris", [InferInput("input-0", [len(rows), 4], "FP32", data)], request_id=kind)
        answer = await client.infer(request)
        label = next(o for o in answer.outputs if o.name == "label")
        out[kind] = {"id": answer.id, "labels": [v.decode() if isinstance(v, bytes) else v
                                                 for v in label.as_numpy().ravel().tolist()]}
    await client.close()
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
"""


def test_kserves_grpc_client_reads_health_and_answers_raw_and_typed(iris: Server) -> None:
    rows = load_iris().data[::10].tolist()
    done = subprocess.run(
        [sys.executable, "-c", KSERVE, address(iris), json.dumps(rows)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    rest = iris.post("/v2/models/iris/infer", content=infer_body(rows)).json()
    labels = next(o["data"] for o in rest["outputs"] if o["name"] == "label")
    assert (got["live"], got["ready"], got["model_ready"]) == (True, True, True)
    assert got["raw"] == {"id": "raw", "labels": labels}
    assert got["typed"] == {"id": "typed", "labels": labels}
