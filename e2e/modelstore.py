"""The example model store: ``http://models.rollwise-system.svc/<artifact>`` inside the cluster.

The examples, the demo and the e2e scenarios load real artifacts over HTTP, as users' clusters
do from an object store. This takes the artifacts committed in ``examples/models/`` (each checked
against the digest ``examples/models/manifest.json`` pins, so the digests in ``examples/`` match on
every machine), adds the deliberately bad candidates, bakes them into a small image served by
Python's ``http.server``, imports it into the real node and applies a Deployment and Service in
``rollwise-system``.

CLI: ``python -m e2e.modelstore`` (needs the cluster up).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from e2e import cluster, images, paths

NAMESPACE = "rollwise-system"
MODELS_DIR = paths.CACHE / "example-models"
COMMITTED = paths.REPO / "examples" / "models"


# Deliberately bad candidates for the rollout scenarios: each looks fine to the server (it loads,
# its digest matches) and fails only in the signal the operator must catch.
BAD_MODELS = {
    "iris-broken.py": "raise RuntimeError('this candidate fails every prediction, on purpose')",
    "iris-slow.py": "time.sleep(0.4)\n        return _rule(inputs)",
    "iris-slow50.py": "time.sleep(0.05)\n        return _rule(inputs)",
    "iris-drift.py": "return {'label': np.full(len(_rows(inputs)), 'virginica', dtype=object)}",
    "iris-flaky5.py": (
        "if np.random.random() < 0.05:\n"
        "            raise RuntimeError('this candidate fails 5 % of predictions, on purpose')\n"
        "        return _rule(inputs)"
    ),
    # 8 points less accurate than iris-v1 on the Iris rows (89.3 % against 97.3 %), agreeing with it
    # on 90.7 % of them, with the same class shares within 4 points: only labels (or a shadow
    # comparison) tell it apart.
    "iris-mislabel.py": (
        "label = _rule(inputs)['label']\n"
        "        width = _rows(inputs)[:, 1]\n"
        "        band = (width >= 2.9) & (width < 3.0)\n"
        "        swapped = np.where(label == 'versicolor', 'virginica', 'versicolor').astype(object)\n"
        "        return {'label': np.where(band & (label != 'setosa'), swapped, label)}"
    ),
    # iris-rule.py, but every row with a sepal width of 3.9 or more (4 % of the Iris rows, all
    # setosa) answered virginica: broken for one segment only.
    "iris-segment-broken.py": (
        "label = _rule(inputs)['label']\n"
        "        wide = _rows(inputs)[:, 1] >= 3.9\n"
        "        return {'label': np.where(wide, 'virginica', label).astype(object)}"
    ),
    "iris-flaky.py": (
        "if np.random.random() < 0.3:\n"
        "            raise RuntimeError('this candidate fails 30 % of predictions, on purpose')\n"
        "        return _rule(inputs)"
    ),
}
BAD_MODEL_TEMPLATE = """\
\"\"\"A bad Iris candidate for Rollwise's rollout tests.\"\"\"

import time

import numpy as np


def _rows(inputs):
    return np.asarray(next(iter(inputs.values())), dtype=np.float64)


def _rule(inputs):
    petal = _rows(inputs)[:, 2]
    label = np.where(petal < 2.5, "setosa", np.where(petal < 4.9, "versicolor", "virginica"))
    return {{"label": label.astype(object)}}


class Model:
    inputs = [{{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}}]
    outputs = [{{"name": "label", "datatype": "BYTES", "shape": [-1]}}]
    classes = ["setosa", "versicolor", "virginica"]

    def predict(self, inputs):
        {body}
"""


def make_models(out: Path = MODELS_DIR) -> Path:
    """Copy the committed example artifacts (each verified against its pinned digest), add the bad ones."""
    manifest = json.loads((COMMITTED / "manifest.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    for key, entry in manifest["models"].items():
        got = hashlib.sha256((COMMITTED / entry["file"]).read_bytes()).hexdigest()
        if got != entry["sha256"]:
            raise RuntimeError(
                f"examples/models/{entry['file']} ({key}) has sha256 {got}, but "
                f"examples/models/manifest.json pins {entry['sha256']}: run `make models` to remake "
                "the artifacts and re-pin every digest"
            )
    made = {*BAD_MODELS, LABELLED}
    for stale in {f.name for f in out.iterdir()} - {f.name for f in COMMITTED.iterdir()} - made:
        (out / stale).unlink()  # e.g. a machine-made artifact an older checkout left in the cache
    for f in COMMITTED.iterdir():
        shutil.copyfile(f, out / f.name)
    for name, body in BAD_MODELS.items():
        (out / name).write_text(BAD_MODEL_TEMPLATE.format(body=body))
    _write_labelled(out / LABELLED)
    return out


LABELLED = "iris-labelled.parquet"
"""The 150 Iris rows with their true class (`species`): examples/backtest-canary.yaml's dataset."""


def _write_labelled(path: Path) -> None:
    """Written the same on every machine (the store's image tag hashes its files)."""
    import pyarrow as pa  # noqa: PLC0415 - only the store needs them, not every e2e import
    import pyarrow.parquet as pq  # noqa: PLC0415
    from sklearn.datasets import load_iris  # noqa: PLC0415

    iris = load_iris()
    columns = {
        name: pa.array(iris.data[:, i], pa.float64())
        for i, name in enumerate(["sepal_length", "sepal_width", "petal_length", "petal_width"])
    }
    columns["species"] = pa.array([str(iris.target_names[t]) for t in iris.target])
    pq.write_table(pa.table(columns), path)


def sha256_of(artifact: str) -> str:
    committed = COMMITTED / artifact
    path = committed if committed.is_file() else make_models() / artifact
    return hashlib.sha256(path.read_bytes()).hexdigest()


def uri_of(artifact: str) -> str:
    return f"http://models.{NAMESPACE}.svc/{artifact}"


def _tag(models: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(models.iterdir()):
        digest.update(f.name.encode() + f.read_bytes())
    return f"rollwise/models:{digest.hexdigest()[:12]}"


MANIFESTS = """\
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: models, namespace: {ns}, labels: {{app: models}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: models}}}}
  template:
    metadata: {{labels: {{app: models}}}}
    spec:
      securityContext: {{runAsNonRoot: true, runAsUser: 65532, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
        - name: http
          image: {image}
          imagePullPolicy: Never
          args: [python3, -m, http.server, "8080", --directory, /models]
          ports: [{{containerPort: 8080, name: http}}]
          readinessProbe: {{httpGet: {{path: /manifest.json, port: 8080}}, periodSeconds: 2}}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {{drop: [ALL]}}
---
apiVersion: v1
kind: Service
metadata: {{name: models, namespace: {ns}}}
spec:
  selector: {{app: models}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
"""


def deploy() -> str:
    """Build, import and apply the model store; returns the image tag."""
    models = make_models()
    tag = _tag(models)
    images.ensure_python_base()
    if not images.image_exists(tag):
        with tempfile.TemporaryDirectory(prefix="models-") as tmp:
            ctx = Path(tmp)
            shutil.copytree(models, ctx / "models")
            (ctx / "Dockerfile").write_text(
                "FROM rollwise/python:bookworm\nCOPY models /models\nUSER 65532:65532\n"
            )
            images.docker_build(ctx, tag)
    images.import_into_node(tag)
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=MANIFESTS.format(ns=NAMESPACE, image=tag))
    cluster.kubectl("-n", NAMESPACE, "rollout", "status", "deployment/models", "--timeout=120s")
    return tag


if __name__ == "__main__":
    print(deploy())
