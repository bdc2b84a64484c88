"""The example artifacts are committed (examples/models/) and every digest the repo pins is theirs.

Training is not byte-reproducible across CPUs (OpenBLAS picks its kernel by CPU), so the bytes every
machine serves are the committed ones; these tests hold the pins to them without depending on what
the machine happened to install, and hold the committed artifacts to the locked libraries and to
the generator.
"""

from __future__ import annotations

import json
import re
import sys
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnxruntime as ort
import pytest
from sklearn.datasets import load_iris
from sklearn.exceptions import InconsistentVersionWarning

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "serving-image"))

import make_example_models  # noqa: E402 - serving-image is not a package

COMMITTED = make_example_models.COMMITTED
MANIFEST: dict[str, Any] = json.loads((COMMITTED / "manifest.json").read_text())
BY_FILE = {entry["file"]: entry["sha256"] for entry in MANIFEST["models"].values()}
HEX64 = re.compile(r"(?<![0-9a-fA-F])[0-9a-f]{64}(?![0-9a-fA-F])")
ARTIFACT = re.compile(r"(iris-[A-Za-z0-9_-]+\.(?:joblib|onnx|py))")
# Files whose 64-hex strings are other things: package hashes in the locks.
NOT_PINS = ("uv.lock", "bench/peers/", "scripts/uv-requirements.txt")
FIX = "run `make models` (remakes examples/models/ and re-pins every digest)"


def repo_text_files() -> list[Path]:
    return [
        p
        for p in make_example_models.tracked_text_files()
        if not str(p.relative_to(REPO)).startswith(NOT_PINS)
    ]


def pins() -> list[tuple[str, int, str, str | None]]:
    """(file, line, digest, the artifact named on that line or the three before it)."""
    found = []
    for path in repo_text_files():
        try:
            lines = path.read_text().splitlines()
        except UnicodeDecodeError:
            continue
        for i, line in enumerate(lines):
            for digest in HEX64.findall(line):
                named = [m for ln in lines[max(0, i - 3) : i + 1] for m in ARTIFACT.findall(ln)]
                found.append((str(path.relative_to(REPO)), i + 1, digest, named[-1] if named else None))
    return found


def test_committed_artifacts_match_their_manifest() -> None:
    make_example_models.committed_manifest()  # raises naming the artifact and the fix
    listed = {e["file"] for e in MANIFEST["models"].values()} | {
        MANIFEST["feature_schema"],
        MANIFEST["reference"],
        "manifest.json",
    }
    assert {p.name for p in COMMITTED.iterdir()} == listed


def test_the_repo_pins_digests_and_each_is_a_committed_artifact() -> None:
    found = pins()
    # The README's first example, every example manifest and the HA test pin artifacts: a scan
    # that found nothing would prove nothing.
    assert {f for f, *_ in found} >= {"README.md", "examples/iris-sklearn.yaml", "examples/canary.yaml"}
    unknown = [f"{f}:{n}: {d}" for f, n, d, _ in found if d not in BY_FILE.values()]
    assert not unknown, "digests that are no committed artifact's; " + FIX + ":\n" + "\n".join(unknown)


def test_each_pin_is_the_digest_of_the_artifact_it_names() -> None:
    wrong = [
        f"{f}:{n}: {name} is {BY_FILE[name]}, pinned as {d}"
        for f, n, d, name in pins()
        if name in BY_FILE and BY_FILE[name] != d
    ]
    assert not wrong, "pins that name another artifact's digest; " + FIX + ":\n" + "\n".join(wrong)


def test_a_changed_artifact_fails_naming_it_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "models"
    copy.mkdir()
    for f in COMMITTED.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "iris-v2.joblib").write_bytes(b"not the committed model")
    monkeypatch.setattr(make_example_models, "COMMITTED", copy)
    named = r"examples/models/iris-v2\.joblib \(iris-v2\) has sha256 .*make models"
    with pytest.raises(SystemExit, match=named):
        make_example_models.committed_manifest()


def test_the_committed_artifacts_were_made_with_the_locked_libraries() -> None:
    installed = {name: version(name) for name in MANIFEST["made_with"]}
    assert MANIFEST["made_with"] == installed, f"the lock moved since the artifacts were made; {FIX}"
    for entry in MANIFEST["models"].values():
        if entry["format"] == "sklearn":
            with warnings.catch_warnings():
                warnings.simplefilter("error", InconsistentVersionWarning)
                joblib.load(COMMITTED / entry["file"])


def _outputs(path: Path, x: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    if path.suffix == ".joblib":
        model = joblib.load(path)
        return np.asarray(model.predict(x)), np.asarray(model.predict_proba(x))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})
    return np.asarray(labels), np.asarray(probabilities)


@pytest.mark.slow
def test_the_generator_still_makes_the_committed_models(tmp_path: Path) -> None:
    """What the script makes here is the committed models up to the fit's CPU-dependent end point.

    Same labels on all 150 rows and probabilities within 0.01: the L-BFGS fit stops at its
    tolerance, and across OpenBLAS's kernels (SkylakeX, Haswell, SandyBridge, Prescott) its
    probabilities moved by at most 0.0016 (measured with OPENBLAS_CORETYPE on one machine).
    """
    made = make_example_models.write_examples(tmp_path)
    assert made["models"].keys() == MANIFEST["models"].keys()
    for name in ("iris-rule.py", "iris-schema.json", "iris-reference.json"):
        assert (tmp_path / name).read_bytes() == (COMMITTED / name).read_bytes(), f"{name} changed; {FIX}"
    x = load_iris().data
    for key, entry in MANIFEST["models"].items():
        if entry["format"] == "python":
            assert made["models"][key]["sha256"] == entry["sha256"], f"{entry['file']} changed; {FIX}"
            continue
        committed_labels, committed_p = _outputs(COMMITTED / entry["file"], x)
        labels, p = _outputs(tmp_path / entry["file"], x)
        assert (labels == committed_labels).all(), f"{entry['file']} predicts differently; {FIX}"
        assert np.abs(p - committed_p).max() < 0.01, f"{entry['file']} moved; {FIX}"
