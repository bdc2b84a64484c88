"""Write small, deterministic example models for the demo, the e2e scenarios and the tests.

    python serving-image/make_example_models.py OUT_DIR

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
- ``manifest.json``: for each artifact its file, format and sha256 (what ``--sha256`` pins).

Running it twice gives byte-identical files (fixed seeds, no timestamps), so digests can be pinned
in manifests and tests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
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
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    manifest = write_examples(args.out_dir)
    for key, entry in manifest["models"].items():
        print(
            f"{key:14} {entry['format']:8} {entry['bytes']:>8} B  sha256 {entry['sha256']}  {entry['file']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
