"""Write the small example models the demo, the examples, the e2e scenarios and the tests load.

    python serving-image/make_example_models.py OUT_DIR   # write them anywhere
    python serving-image/make_example_models.py --repin   # remake examples/models/ and re-pin
                                                          # every digest that changed (make models)

The artifacts everything uses are the ones committed in ``examples/models/`` (`COMMITTED`), not a
fresh run of this script: training is not byte-reproducible across machines even with the locked
library versions, because OpenBLAS picks its kernel by CPU (the same lock gives iris-v1.joblib
0f0a20f6... on an AVX-512 machine and d362126f... with Haswell/Zen kernels; the L-BFGS fit stops
at its tolerance on a slightly different point, same predictions). On one machine two runs are
byte-identical (fixed seeds, no timestamps).

Everything comes from the Iris data set that scikit-learn ships (no download). OUT_DIR gets:

- ``iris-v1.joblib`` / ``iris-v2.joblib``: logistic regressions (v2 more regularised, so a
  candidate that answers slightly differently), trained on string labels;
- ``iris-v1.onnx``: the v1 model converted with skl2onnx (``zipmap=False``);
- ``iris-mlp.onnx`` and ``iris-mlp-int8.onnx``: a small multi-layer perceptron (2 x 64) and its
  dynamically INT8-quantized twin (a logistic regression converts to one ``LinearClassifier``
  node, which has no weights for a quantizer to shrink; an MLP's ``MatMul`` weights do);
- ``iris-rule.py``: a petal-length rule as a python-format model, the usual fallback;
- ``iris-schema.json``: the feature schema (ranges, classifier output classes);
- ``iris-reference.json``: the reference distribution (training-set quantile bins per feature
  and predicted-class shares) for drift;
- ``manifest.json``: for each artifact its file, format and sha256 (what ``--sha256`` pins), and
  the versions of the libraries that made it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rollwise_serving.drift import fractions_of, quantile_cuts

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
# Plausible physical ranges (cm): wider than the data set, so real flowers pass and typos do not.
RANGES = {
    "sepal_length": (3.0, 9.0),
    "sepal_width": (1.5, 5.5),
    "petal_length": (0.5, 8.0),
    "petal_width": (0.0, 3.0),
}
REFERENCE_BINS = 10
REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "examples" / "models"
REPIN = "make models"

RULE_MODEL = '''"""Fallback rule for Iris: petal length alone (about 95 % accurate), never fails."""

import numpy as np


class Model:
    inputs = [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    outputs = [{"name": "label", "datatype": "BYTES", "shape": [-1]}]
    classes = ["setosa", "versicolor", "virginica"]

    def predict(self, inputs):
        x = np.asarray(next(iter(inputs.values())), dtype=np.float64)
        petal = x[:, 2]
        label = np.where(petal < 2.5, "setosa", np.where(petal < 4.9, "versicolor", "virginica"))
        return {"label": label.astype(object)}
'''


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train(c: float) -> tuple[LogisticRegression, np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    iris = load_iris()
    x = iris.data.astype(np.float64)
    y = np.asarray(iris.target_names)[iris.target]
    model = LogisticRegression(C=c, max_iter=1000, random_state=0)
    model.fit(x, y)
    return model, x, y


def write_onnx(model: Any, path: Path) -> Path:
    from skl2onnx import to_onnx  # noqa: PLC0415 - dev-only dependency

    onx = to_onnx(
        model, np.zeros((1, 4), dtype=np.float32), options={id(model): {"zipmap": False}}, target_opset=17
    )
    path.write_bytes(onx.SerializeToString())
    return path


def write_quantized(source: Path, path: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415 - dev-only use

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer's advice to pre-process is noise for a 2x64 MLP
    try:
        quantize_dynamic(str(source), str(path), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return path


def made_with() -> dict[str, str]:
    """The versions that shape the bytes; a pickle only loads cleanly under the scikit-learn that wrote it."""
    import onnx  # noqa: PLC0415 - dev-only dependency
    import onnxruntime  # noqa: PLC0415 - dev-only use
    import scipy  # noqa: PLC0415
    import skl2onnx  # noqa: PLC0415 - dev-only dependency
    import sklearn  # noqa: PLC0415

    return {
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "joblib": joblib.__version__,
        "skl2onnx": skl2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def committed_manifest() -> dict[str, Any]:
    """The committed artifacts' manifest, each verified against its digest (fails naming the fix)."""
    manifest: dict[str, Any] = json.loads((COMMITTED / "manifest.json").read_text())
    for key, entry in manifest["models"].items():
        path = COMMITTED / entry["file"]
        if not path.is_file():
            raise SystemExit(f"examples/models/{entry['file']} ({key}) is missing: run `{REPIN}`")
        if sha256_of(path) != entry["sha256"]:
            raise SystemExit(
                f"examples/models/{entry['file']} ({key}) has sha256 {sha256_of(path)}, but "
                f"examples/models/manifest.json pins {entry['sha256']}: run `{REPIN}` to remake and re-pin"
            )
    return manifest


def tracked_text_files() -> list[Path]:
    """The repo's files (tracked, or new and not ignored) that may pin a digest: all but the artifacts."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    names = sorted({n for n in listed.split("\0") if n and not n.startswith("examples/models/")})
    return [REPO / n for n in names if (REPO / n).is_file()]


def repin() -> dict[str, Any]:
    """Remake examples/models/ and replace each changed digest in every tracked file that pins it."""
    old = json.loads((COMMITTED / "manifest.json").read_text())["models"]
    manifest = write_examples(COMMITTED)
    changed = {
        old[key]["sha256"]: entry["sha256"]
        for key, entry in manifest["models"].items()
        if key in old and old[key]["sha256"] != entry["sha256"]
    }
    for path in tracked_text_files() if changed else []:
        try:
            text = path.read_text()
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        new = text
        for before, after in changed.items():
            new = new.replace(before, after)
        if new != text:
            path.write_text(new)
            print(f"re-pinned {path.relative_to(REPO)}", file=sys.stderr)
    return manifest


def write_examples(out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    v1, x, _ = train(1.0)
    v2, _, _ = train(0.05)
    joblib.dump(v1, out / "iris-v1.joblib")
    joblib.dump(v2, out / "iris-v2.joblib")
    write_onnx(v1, out / "iris-v1.onnx")
    iris = load_iris()
    mlp = MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=2000, random_state=0)
    mlp.fit(x, np.asarray(iris.target_names)[iris.target])
    write_quantized(write_onnx(mlp, out / "iris-mlp.onnx"), out / "iris-mlp-int8.onnx")
    (out / "iris-rule.py").write_text(RULE_MODEL)

    schema = {
        "features": [
            {"name": n, "type": "float", "min": RANGES[n][0], "max": RANGES[n][1]} for n in FEATURES
        ],
        "output": {"kind": "classifier", "classes": [str(c) for c in v1.classes_]},
    }
    (out / "iris-schema.json").write_text(json.dumps(schema, indent=2) + "\n")

    features = {}
    for i, name in enumerate(FEATURES):
        cuts = quantile_cuts(x[:, i], REFERENCE_BINS)
        features[name] = {"cuts": cuts, "fractions": [round(f, 6) for f in fractions_of(x[:, i], cuts)]}
    predicted = v1.predict(x)
    classes = [str(c) for c in v1.classes_]
    shares = [round(float(np.mean(predicted == c)), 6) for c in classes]
    reference = {
        "features": features,
        "prediction": {"classes": classes, "fractions": shares},
        "rows": len(x),
    }
    (out / "iris-reference.json").write_text(json.dumps(reference, indent=2) + "\n")

    artifacts = {
        "iris-v1": ("iris-v1.joblib", "sklearn"),
        "iris-v2": ("iris-v2.joblib", "sklearn"),
        "iris-v1-onnx": ("iris-v1.onnx", "onnx"),
        "iris-mlp-onnx": ("iris-mlp.onnx", "onnx"),
        "iris-mlp-int8": ("iris-mlp-int8.onnx", "onnx"),
        "iris-rule": ("iris-rule.py", "python"),
    }
    manifest = {
        "models": {
            key: {
                "file": file,
                "format": fmt,
                "sha256": sha256_of(out / file),
                "bytes": (out / file).stat().st_size,
            }
            for key, (file, fmt) in artifacts.items()
        },
        "feature_schema": "iris-schema.json",
        "reference": "iris-reference.json",
        "features": FEATURES,
        "made_with": made_with(),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, nargs="?", help="where to write them")
    parser.add_argument("--repin", action="store_true", help="remake examples/models/ and re-pin digests")
    args = parser.parse_args(argv)
    if args.repin == (args.out_dir is not None):
        parser.error("give either OUT_DIR or --repin")
    manifest = repin() if args.repin else write_examples(args.out_dir)
    for key, entry in manifest["models"].items():
        print(
            f"{key:14} {entry['format']:8} {entry['bytes']:>8} B  sha256 {entry['sha256']}  {entry['file']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
