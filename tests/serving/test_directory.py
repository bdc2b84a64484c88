"""Directory and archive artifacts (#17): several files pinned by the digest of their manifest.

Real servers load a `python`-format model whose `load(directory)` reads a weights file beside
it (and leaves a mark, so a refused artifact is shown never to have been loaded), and the ONNX MLP
saved with its weights as external data; from a local directory, `.tar.gz` and `.zip` archives,
a loopback HTTP directory and a moto S3 prefix. Tampered, unlisted, escaping and linked files
are refused before anything is loaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import boto3
import onnx
import pytest
from onnx import numpy_helper

from tests.serving.conftest import S3, SETOSA, VIRGINICA, Server, ServerFactory, infer_body
from tests.serving.test_loading import http_files

__all__ = ["http_files"]  # the loopback HTTP fixture, shared

MODEL = """
import json
from pathlib import Path

import numpy as np


class Model:
    def load(self, directory):
        self.weights = json.loads((Path(directory) / "weights" / "w.json").read_text())
        (Path(directory).parent / "loaded-mark").write_text("loaded")

    def predict(self, inputs):
        x = np.asarray(next(iter(inputs.values())), dtype=np.float64)
        return {"prediction": x @ np.asarray(self.weights)}
"""


def manifest(root: Path) -> str:
    """Write SHA256SUMS as `sha256sum` does for every file; return its digest (the pin)."""
    lines = [
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(root).as_posix()}"
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "SHA256SUMS"
    ]
    (root / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return hashlib.sha256((root / "SHA256SUMS").read_bytes()).hexdigest()


def python_tree(root: Path) -> str:
    (root / "weights").mkdir(parents=True)
    (root / "model.py").write_text(MODEL)
    (root / "weights" / "w.json").write_text(json.dumps([1.0, 10.0, 100.0, 1000.0]))
    return manifest(root)


def start(servers: ServerFactory, uri: str, sha: str, *extra: str, fmt: str = "python", **kw: Any) -> Server:
    args = ["--model-uri", uri, "--sha256", sha, "--format", fmt, "--name", "m", "--version", "v1"]
    return servers.start(*args, *extra, **kw)


def wait_failed(s: Server) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body: dict[str, Any] = s.get("/v2/health/ready").json()
        if body["models"][0]["state"] != "loading":
            return body
        time.sleep(0.05)
    pytest.fail("the model never left the loading state in 60 s")


def answer(s: Server) -> float:
    r = s.post("/v2/models/m/infer", content=infer_body([[1.0, 2.0, 3.0, 4.0]], "FP64"))
    assert r.status_code == 200, r.text
    return float(r.json()["outputs"][0]["data"][0])


def test_a_local_directory_loads_with_its_files(fresh_servers: ServerFactory, tmp_path: Path) -> None:
    root = tmp_path / "model"
    sha = python_tree(root)
    s = start(fresh_servers, root.as_uri() + "/", sha)
    assert answer(s) == 4321.0
    ready = s.get("/v2/health/ready").json()
    assert ready["models"][0]["sha256"] == sha and ready["models"][0]["reason"] == "loaded and verified"


@pytest.mark.parametrize("damage", ["tampered", "unlisted", "missing", "wrong pin", "symlink"])
def test_a_damaged_directory_is_refused_before_anything_loads(
    fresh_servers: ServerFactory, tmp_path: Path, damage: str
) -> None:
    root = tmp_path / "model"
    sha = python_tree(root)
    says = {
        "tampered": "file 'weights/w.json' has digest",
        "unlisted": "not in SHA256SUMS",
        "missing": "is listed in SHA256SUMS but is not a regular file",
        "wrong pin": "sha256 mismatch",
        "symlink": "symbolic link",
    }[damage]
    if damage == "tampered":
        (root / "weights" / "w.json").write_text("[1, 1, 1, 1]")
    elif damage == "unlisted":
        (root / "extra.py").write_text("print('not listed')")
    elif damage == "missing":
        (root / "weights" / "w.json").unlink()
    elif damage == "wrong pin":
        sha = "0" * 64
    else:
        (root / "link").symlink_to("/etc/passwd")
    s = start(fresh_servers, root.as_uri() + "/", sha, wait_ready=False)
    body = wait_failed(s)
    assert s.get("/v2/health/ready").status_code == 503
    assert says in body["reason"], body
    assert not (tmp_path / "loaded-mark").exists()  # model.py never ran


def archive(root: Path, out: Path) -> None:
    if out.name.endswith(".zip"):
        with zipfile.ZipFile(out, "w") as zf:
            for p in sorted(root.rglob("*")):
                if p.is_file():
                    zf.write(p, p.relative_to(root).as_posix())
    else:
        with tarfile.open(out, "w:gz") as tar:
            tar.add(root, arcname=".")


@pytest.mark.parametrize("name", ["model.tar.gz", "model.zip"])
def test_an_archive_over_http_is_unpacked_once_and_reused(
    fresh_servers: ServerFactory, tmp_path: Path, http_files: tuple[str, Path, list[str]], name: str
) -> None:
    base, www, requests = http_files
    sha = python_tree(tmp_path / "model")
    archive(tmp_path / "model", www / name)
    cache = ("--cache-dir", str(tmp_path / "cache"))
    first = start(fresh_servers, f"{base}/{name}", sha, *cache)
    assert answer(first) == 4321.0
    second = start(fresh_servers, f"{base}/{name}", sha, *cache)
    assert answer(second) == 4321.0
    assert requests == [f"/{name}"]  # the second server used the verified unpacked copy


def hostile_tar(out: Path, member: str, kind: bytes = tarfile.REGTYPE) -> None:
    with tarfile.open(out, "w:gz") as tar:
        info = tarfile.TarInfo(member)
        info.type = kind
        data = b"[1, 1, 1, 1]"
        if kind == tarfile.SYMTYPE:
            info.linkname = "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize(
    ("member", "kind", "says"),
    [
        ("../escape.json", tarfile.REGTYPE, "not a plain relative path"),
        ("/abs.json", tarfile.REGTYPE, "not a plain relative path"),
        ("link", tarfile.SYMTYPE, "is a link or device"),
    ],
)
def test_a_hostile_archive_writes_nothing_outside(
    fresh_servers: ServerFactory, tmp_path: Path, member: str, kind: bytes, says: str
) -> None:
    evil = tmp_path / "evil.tar.gz"
    hostile_tar(evil, member, kind)
    s = start(
        fresh_servers, evil.as_uri(), "1" * 64, "--cache-dir", str(tmp_path / "c" / "d"), wait_ready=False
    )
    body = wait_failed(s)
    assert says in body["reason"], body
    assert (
        not (tmp_path / "c" / "escape.json").exists() and not (tmp_path / "c" / "d" / "escape.json").exists()
    )
    assert not list((tmp_path / "c" / "d").rglob("link"))


def test_a_remote_directory_is_fetched_file_by_file_after_its_manifest(
    fresh_servers: ServerFactory, tmp_path: Path, http_files: tuple[str, Path, list[str]]
) -> None:
    base, www, requests = http_files
    sha = python_tree(www / "m")
    (www / "m" / "not-listed.bin").write_bytes(b"never fetched")
    s = start(fresh_servers, f"{base}/m/", sha, "--cache-dir", str(tmp_path / "cache"))
    assert answer(s) == 4321.0
    assert sorted(requests) == ["/m/SHA256SUMS", "/m/model.py", "/m/weights/w.json"]
    requests.clear()
    wrong = start(
        fresh_servers, f"{base}/m/", "2" * 64, "--cache-dir", str(tmp_path / "c2"), wait_ready=False
    )
    assert "sha256 mismatch" in wait_failed(wrong)["reason"]
    assert requests == ["/m/SHA256SUMS"]  # nothing else fetched for a manifest that fails its pin


def test_onnx_with_external_weights_from_an_s3_prefix(
    fresh_servers: ServerFactory,
    models: dict[str, Any],
    tmp_path: Path,
    s3_server: S3,
    aws_env: dict[str, str],
) -> None:
    """The MLP with its tensors in a separate file, as large ONNX models are saved: onnxruntime
    reads them beside the graph, so the directory must arrive whole and verified."""
    root = tmp_path / "mlp"
    root.mkdir()
    graph = onnx.load(str(models["dir"] / "iris-mlp.onnx"))
    # The weights as raw bytes (the form external data is written from); small tensors such as a
    # Reshape's target shape stay in the graph, where shape inference reads them.
    for tensor in graph.graph.initializer:
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name))
    onnx.save_model(
        graph,
        str(root / "model.onnx"),
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=1024,
    )
    assert (root / "weights.bin").stat().st_size > 10_000
    sha = manifest(root)
    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="models")
    for p in root.iterdir():
        client.upload_file(str(p), "models", f"iris/mlp/{p.name}")
    s = start(
        fresh_servers,
        "s3://models/iris/mlp/",
        sha,
        "--s3-endpoint",
        s3_server.endpoint,
        fmt="onnx",
        env=aws_env,
    )
    r = s.post("/v2/models/m/infer", content=infer_body([SETOSA, VIRGINICA]))
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == ["setosa", "virginica"]
