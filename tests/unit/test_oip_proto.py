"""Our OIP proto is wire-compatible with Triton's and KServe's: every message and method we
declare has their names, field numbers and types.

Triton's descriptors are compared in this process (our messages live in a pool of their own, so
both load side by side, which is itself checked); KServe's in a child process, because KServe's
and Triton's modules declare the same names in protobuf's default pool and refuse to load together.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FileDescriptor
from rollwise_serving.app import ERRORS
from rollwise_serving.grpc_service import CODES
from rollwise_serving.oip import grpc_predict_v2_pb2 as ours
from tritonclient.grpc import service_pb2 as triton

Fields = dict[str, dict[str, Any]]


def fields(message: Descriptor) -> Fields:
    """A message's fields, and its nested messages' as ``Outer.Inner.field``, by name."""
    out: Fields = {}
    for f in message.fields:
        out[f.name] = {
            "number": f.number,
            "type": f.type,
            "repeated": f.is_repeated,
            "message": f.message_type.full_name if f.message_type is not None else None,
            "oneof": f.containing_oneof.name if f.containing_oneof is not None else None,
        }
    for nested in message.nested_types:
        out |= {f"{nested.name}.{k}": v for k, v in fields(nested).items()}
    return out


def layout(file: FileDescriptor) -> dict[str, Any]:
    """The package, each top-level message's fields and the service's methods of a proto file."""
    service = file.services_by_name["GRPCInferenceService"]
    return {
        "package": file.package,
        "messages": {name: fields(m) for name, m in file.message_types_by_name.items()},
        "methods": {
            m.name: [m.input_type.full_name, m.output_type.full_name, m.client_streaming, m.server_streaming]
            for m in service.methods
        },
    }


OURS = layout(ours.DESCRIPTOR)
TRITON = layout(triton.DESCRIPTOR)

KSERVE_DUMP = f"""
from __future__ import annotations
import json
from kserve.protocol.grpc import grpc_predict_v2_pb2
{inspect.getsource(fields)}
{inspect.getsource(layout)}
print(json.dumps(layout(grpc_predict_v2_pb2.DESCRIPTOR)))
"""
"""The same ``layout`` of KServe's proto, printed by a process that never imports Triton's."""


@pytest.fixture(scope="module")
def kserve() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", KSERVE_DUMP], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    return out


def test_the_package_and_the_six_methods_are_the_protocols() -> None:
    assert OURS["package"] == TRITON["package"] == "inference"
    assert sorted(OURS["methods"]) == sorted(
        ["ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"]
    )
    for name, signature in OURS["methods"].items():
        assert TRITON["methods"][name] == signature, name


@pytest.mark.parametrize("message", sorted(OURS["messages"]))
def test_every_message_matches_tritons_field_by_field(message: str) -> None:
    assert message in TRITON["messages"], f"Triton has no message {message}"
    assert OURS["messages"][message] == TRITON["messages"][message]


def test_kserves_messages_and_methods_are_ours(kserve: dict[str, Any]) -> None:
    """KServe's proto is a subset of Triton's: its InferParameter lacks double and uint64, which
    its client then never sends; every field it has is ours, number and type alike."""
    assert kserve["package"] == "inference"
    for name, signature in OURS["methods"].items():
        assert kserve["methods"][name] == signature, name
    for message, ours_fields in OURS["messages"].items():
        theirs = kserve["messages"][message]
        assert {k: ours_fields[k] for k in theirs} == theirs, message
        extra = set(ours_fields) - set(theirs)
        assert extra <= {"double_param", "uint64_param"}, (message, extra)


def test_a_request_triton_encodes_reads_back_the_same_in_ours() -> None:
    sent = triton.ModelInferRequest(model_name="iris", id="r1", raw_input_contents=[b"\x00\x01"])
    tensor = sent.inputs.add(name="x", datatype="INT64", shape=[1, 2])
    tensor.contents.int64_contents.extend([-1, 2**40])
    tensor.parameters["p"].uint64_param = 2**63
    got = ours.ModelInferRequest.FromString(sent.SerializeToString())
    assert got.inputs[0].contents.int64_contents == [-1, 2**40]
    assert got.inputs[0].parameters["p"].uint64_param == 2**63
    assert got.raw_input_contents == [b"\x00\x01"] and got.id == "r1"


def test_every_error_status_has_a_grpc_code() -> None:
    assert {status for status, _ in ERRORS.values()} <= set(CODES)
