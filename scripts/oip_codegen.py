"""Generate the model server's OIP gRPC code from its proto; ``--check`` fails when it is stale.

    python scripts/oip_codegen.py          # rewrites serving-image/rollwise_serving/oip/*_pb2*
    python scripts/oip_codegen.py --check  # exits 1 naming each generated file that differs

protoc (``grpcio-tools``, dev only) writes ``grpc_predict_v2_pb2.py``/``.pyi`` and
``grpc_predict_v2_pb2_grpc.py``. One change is made to its output: the messages are built in a
descriptor pool of their own instead of protobuf's default one. Triton's and KServe's clients each
register the same ``inference.*`` names in the default pool, and two files declaring one name
there refuse to load ("duplicate symbol"), so without this a process could not import our server
module next to either client. Only names inside the process are private: the wire (the
``/inference.GRPCInferenceService/ModelInfer`` path, field numbers) is the protocol's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1] / "serving-image"
PROTO = "rollwise_serving/oip/grpc_predict_v2.proto"
OUTPUTS = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi", "grpc_predict_v2_pb2_grpc.py")
_DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
_OWN_POOL = (
    "# rollwise: a pool of our own, not the default one Triton's and KServe's clients fill with the\n"
    "# same names (scripts/oip_codegen.py says why)\n"
    "POOL = _descriptor_pool.DescriptorPool()\n"
    "DESCRIPTOR = POOL.AddSerializedFile("
)


def generate() -> dict[str, str]:
    """Each generated file's name and text."""
    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", f"-I{ROOT}", f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}"]
        if protoc.main([*args, str(ROOT / PROTO)]) != 0:
            raise SystemExit(f"protoc failed on {PROTO}")
        out = Path(tmp) / "rollwise_serving" / "oip"
        files = {name: (out / name).read_text() for name in OUTPUTS}
    pb2 = files["grpc_predict_v2_pb2.py"]
    if pb2.count("DESCRIPTOR = " + _DEFAULT_POOL) != 1:
        raise SystemExit("protoc's output changed shape: no single default-pool registration to replace")
    files["grpc_predict_v2_pb2.py"] = pb2.replace("DESCRIPTOR = " + _DEFAULT_POOL, _OWN_POOL)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when a generated file is stale")
    check = parser.parse_args(argv).check
    target = ROOT / "rollwise_serving" / "oip"
    stale = []
    for name, text in generate().items():
        path = target / name
        if path.exists() and path.read_text() == text:
            continue
        if check:
            stale.append(str(path.relative_to(ROOT.parent)))
        else:
            path.write_text(text)
    if stale:
        print(
            f"stale generated code: {', '.join(stale)}; run `python scripts/oip_codegen.py` and commit",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
